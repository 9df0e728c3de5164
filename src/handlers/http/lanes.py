"""Where blocking work runs in the local server, so that one slow upstream stalls nothing else.

Work that waits on an upstream runs in worker threads, at most `per_upstream` at a time for each upstream; a
request that cannot get a place within `queue_seconds` gets 503 with Retry-After instead of waiting on. Bytes of
fills in flight are read in threads of their own. Neither uses the default thread pool, which is left to what
never waits on an upstream (cached files streamed to clients, the token endpoint, the catalog), and /v2/ and
cached manifests are answered on the event loop itself. So 45 requests hanging on one upstream hold 16 threads,
and a cached blob, /v2/, /token and every other upstream are served as before.

One event loop only: a Lambda instance serves one request at a time and has no use for lanes.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from core.errors import Unavailable

T = TypeVar("T")

PER_UPSTREAM = 16
QUEUE_SECONDS = 10.0
STREAM_THREADS = 256


class UpstreamLanes:
    def __init__(self, per_upstream: int = PER_UPSTREAM, queue_seconds: float = QUEUE_SECONDS) -> None:
        self._per_upstream = per_upstream
        self._queue_seconds = queue_seconds
        self._lanes: dict[str, anyio.Semaphore] = {}
        self._threads: anyio.CapacityLimiter | None = None
        self._stream_threads: anyio.CapacityLimiter | None = None

    async def run(self, upstream: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`function(*args, **kwargs)` in a worker thread, in `upstream`'s lane."""
        lane = self._lanes.get(upstream)
        if lane is None:
            lane = self._lanes[upstream] = anyio.Semaphore(self._per_upstream)
        acquired = False
        with anyio.move_on_after(self._queue_seconds):  # only the wait for a place: the work itself is not cut
            await lane.acquire()
            acquired = True
        if not acquired:
            raise Unavailable(f"too many requests are waiting for {upstream}; retry shortly", retry_after=5)
        try:
            return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs), limiter=self._pool())
        finally:
            lane.release()

    async def stream(self, chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
        """A blocking iterator (a fill in flight, which may wait on its upstream) read in threads of its own."""
        while True:
            chunk = await anyio.to_thread.run_sync(next, chunks, None, limiter=self._streams())
            if chunk is None:
                return
            yield chunk

    def _pool(self) -> anyio.CapacityLimiter:
        if self._threads is None:  # created in the event loop, on first use
            self._threads = anyio.CapacityLimiter(self._per_upstream * 16)
        return self._threads

    def _streams(self) -> anyio.CapacityLimiter:
        if self._stream_threads is None:
            self._stream_threads = anyio.CapacityLimiter(STREAM_THREADS)
        return self._stream_threads
