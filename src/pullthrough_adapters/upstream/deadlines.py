"""A deadline for a whole upstream exchange, not only for each read.

httpx's read timeout bounds the wait for the next bytes, so an upstream that sends one byte of its headers every few
seconds is never timed out. Sockets here are wrapped so that every read also stops at the deadline the calling
thread set with `within(seconds)` (httpx's sync client reads on the caller's thread): the answer's headers (and a
token service's whole answer) must arrive within it. Bodies are guarded by their progress instead (see client.py).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpcore

_current = threading.local()


@contextmanager
def within(seconds: float) -> Iterator[None]:
    previous = getattr(_current, "deadline", None)
    _current.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _current.deadline = previous


def _bounded(timeout: float | None) -> float | None:
    deadline: float | None = getattr(_current, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the upstream did not answer in time")
    return left if timeout is None else min(timeout, left)


# httpcore asks for 64 KiB at a time; what the socket already holds is taken in one read instead, so that a big blob
# goes through h11 and the fill's loop in a sixteenth as many chunks (a cold 1 GiB blob here: 2.2 s instead of 2.8 s).
READ_AT_MOST_BYTES = 1 << 20


class DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max(max_bytes, READ_AT_MOST_BYTES), _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, _bounded(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)
