"""An upstream that throttles, fails or times out is left alone for a while: by every request of every server
process and Lambda instance, because the back-off lives in the metadata store. Cached content is served meanwhile;
what is not cached fails at once with the upstream's own error instead of hammering it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TypeVar

from core.digest import Digest
from core.errors import TooManyRequests, Unavailable
from core.ports import MetadataStore, TagPage, Upstream, UpstreamBlob, UpstreamHead, UpstreamManifest

log = logging.getLogger(__name__)
T = TypeVar("T")

UNAVAILABLE_BACKOFF_SECONDS = 30.0
MAX_THROTTLE_BACKOFF_SECONDS = 600.0


class GuardedUpstream:
    def __init__(self, upstream: Upstream, metadata: MetadataStore, key: str) -> None:
        self._upstream = upstream
        self._metadata = metadata
        self._key = key

    def head_manifest(self, repository: str, reference: str) -> UpstreamHead:
        return self._call(lambda: self._upstream.head_manifest(repository, reference))

    def get_manifest(self, repository: str, reference: str) -> UpstreamManifest:
        return self._call(lambda: self._upstream.get_manifest(repository, reference))

    def head_blob(self, repository: str, digest: Digest) -> int | None:
        return self._call(lambda: self._upstream.head_blob(repository, digest))

    @contextmanager
    def open_blob(self, repository: str, digest: Digest) -> Iterator[UpstreamBlob]:
        with ExitStack() as stack:
            blob = self._call(lambda: stack.enter_context(self._upstream.open_blob(repository, digest)))
            yield UpstreamBlob(blob.size, self._watched(blob.chunks))

    def _watched(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """A download that breaks off midway counts as a failure of the upstream too."""
        try:
            yield from chunks
        except Unavailable as exc:
            self._back_off(UNAVAILABLE_BACKOFF_SECONDS, exc.code, exc.message)
            raise

    def list_tags(self, repository: str, n: int | None, last: str | None) -> TagPage:
        return self._call(lambda: self._upstream.list_tags(repository, n, last))

    def _call(self, operation: Callable[[], T]) -> T:
        backoff = self._metadata.get_backoff(self._key)
        if backoff is not None:
            retry_after = max(1, int(backoff.seconds_left))
            message = f"not asking {self._key} for {retry_after} s after: {backoff.reason}"
            if backoff.code == TooManyRequests.code:
                raise TooManyRequests(message, retry_after=retry_after)
            raise Unavailable(message, retry_after=retry_after)
        try:
            return operation()
        except TooManyRequests as exc:
            self._back_off(min(max(exc.retry_after, 1), MAX_THROTTLE_BACKOFF_SECONDS), exc.code, exc.message)
            raise
        except Unavailable as exc:
            self._back_off(UNAVAILABLE_BACKOFF_SECONDS, exc.code, exc.message)
            raise

    def _back_off(self, seconds: float, code: str, reason: str) -> None:
        log.warning("backing off %s for %.0f s: %s", self._key, seconds, reason)
        self._metadata.put_backoff(self._key, seconds, code, reason)
