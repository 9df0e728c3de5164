"""Guarding one upstream: a circuit breaker shared by every server process and Lambda instance through the metadata
store, and a short memory of what the upstream said does not exist.

Only failures that say something about the upstream as a whole count: refused, reset or timed-out connections,
502/503/504 and 429 (the upstream client marks them). A 404, a 500 for one name or a cut download is that request's
problem and is answered as such; it even shows the upstream is alive. After FAILURE_THRESHOLD such failures in a
row the breaker opens: for its back-off (at least the upstream's Retry-After), nobody asks that upstream, cached
content is served and the rest fails at once. Then one request probes (half-open): success closes the breaker, a
failure opens it again for twice as long.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TypeVar

from core import metrics as counts
from core.digest import Digest
from core.errors import BlobUnknown, ManifestUnknown, NameUnknown, RegistryError, TooManyRequests, Unavailable
from core.ports import (
    BreakerState,
    Metrics,
    NoMetrics,
    TagPage,
    Upstream,
    UpstreamBlob,
    UpstreamGuardState,
    UpstreamHead,
    UpstreamManifest,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

FAILURE_THRESHOLD = 3
FAILURE_WINDOW_SECONDS = 60.0  # failures further apart than this are not "in a row"
BASE_BACKOFF_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 600.0
PROBE_LEASE_SECONDS = 60.0  # a prober that died is replaced after this
PROBE_BUSY_RETRY_SECONDS = 2
# An upstream's "not found" is remembered this long per rule, so a client asking the same missing name in a loop
# costs the upstream one request per period. Short, because a tag pushed meanwhile stays hidden that long.
NOT_FOUND_SECONDS = 15.0


def whole_upstream(error: RegistryError) -> bool:
    return isinstance(error, TooManyRequests) or (isinstance(error, Unavailable) and error.whole_upstream)


def backoff_seconds(trips: int, error: RegistryError) -> float:
    """Doubles with each trip since the breaker last closed; never shorter than the upstream's own Retry-After."""
    asked = float(error.retry_after) if isinstance(error, (TooManyRequests, Unavailable)) else 0.0
    return min(MAX_BACKOFF_SECONDS, max(BASE_BACKOFF_SECONDS * 2.0**trips, asked))


class GuardedUpstream:
    """An Upstream behind its breaker (`breaker_key`: the upstream's URL, shared by every rule that uses it) and the
    not-found memory of one rule (`scope`)."""

    def __init__(
        self,
        upstream: Upstream,
        state: UpstreamGuardState,
        breaker_key: str,
        scope: str,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self._upstream = upstream
        self._state = state
        self._key = breaker_key
        self._scope = scope
        self._clock = clock
        self._metrics = metrics or NoMetrics()

    def head_manifest(self, repository: str, reference: str) -> UpstreamHead:
        operation = lambda: self._upstream.head_manifest(repository, reference)  # noqa: E731
        return self._call(operation, f"{repository}/manifests/{reference}", ManifestUnknown)

    def get_manifest(self, repository: str, reference: str) -> UpstreamManifest:
        operation = lambda: self._upstream.get_manifest(repository, reference)  # noqa: E731
        return self._call(operation, f"{repository}/manifests/{reference}", ManifestUnknown)

    def head_blob(self, repository: str, digest: Digest) -> int | None:
        operation = lambda: self._upstream.head_blob(repository, digest)  # noqa: E731
        return self._call(operation, f"{repository}/blobs/{digest}", BlobUnknown)

    @contextmanager
    def open_blob(self, repository: str, digest: Digest) -> Iterator[UpstreamBlob]:
        """A download counts as a success only once its body is complete: an upstream that answers at once and then
        drip-feeds every body must still open the breaker."""
        with ExitStack() as stack:
            operation = lambda: stack.enter_context(self._upstream.open_blob(repository, digest))  # noqa: E731
            blob, state = self._attempt(operation, f"{repository}/blobs/{digest}", BlobUnknown)
            yield UpstreamBlob(blob.size, self._watched(blob.chunks, state))

    def list_tags(self, repository: str, n: int | None, last: str | None) -> TagPage:
        operation = lambda: self._upstream.list_tags(repository, n, last)  # noqa: E731
        return self._call(operation, f"{repository}/tags/list", NameUnknown)

    def referrers(self, repository: str, subject: Digest) -> UpstreamManifest | None:
        operation = lambda: self._upstream.referrers(repository, subject)  # noqa: E731
        return self._call(operation, f"{repository}/referrers/{subject}", NameUnknown)

    def _watched(self, chunks: Iterator[bytes], state: BreakerState | None) -> Iterator[bytes]:
        try:
            yield from chunks
        except RegistryError as exc:
            if whole_upstream(exc):  # stalled for good; one cut short (and not resumed) is that download's problem
                self._failed(exc, state, probing=False)
            raise
        self._succeeded(state)

    def _call(self, operation: Callable[[], T], path: str, not_found: type[RegistryError]) -> T:
        result, state = self._attempt(operation, path, not_found)
        self._succeeded(state)
        return result

    def _attempt(
        self, operation: Callable[[], T], path: str, not_found: type[RegistryError]
    ) -> tuple[T, BreakerState | None]:
        """The operation's result and the breaker state it was admitted under, for the caller to settle."""
        absent_key = f"absent/{self._scope}/{path}"
        if self._state.get_counter(absent_key) > 0:
            raise not_found(f"upstream: {not_found.default_message} (asked moments ago)")
        state = self._state.get_breaker(self._key)
        probe_owner = self._admit(state)
        try:
            return operation(), state
        except RegistryError as exc:
            if whole_upstream(exc):
                self._failed(exc, state, probing=probe_owner is not None)
            else:  # the upstream answered: it is up
                self._succeeded(state)
                if isinstance(exc, not_found):
                    self._state.increment_counter(absent_key, self._clock() + NOT_FOUND_SECONDS)
            raise
        finally:
            if probe_owner is not None:
                self._state.release_lease(self._probe_key, probe_owner)

    @property
    def _probe_key(self) -> str:
        return f"probe/{self._key}"

    def _admit(self, state: BreakerState | None) -> str | None:
        """Raise while the breaker is open; once its back-off ran out, let one caller probe (its lease owner)."""
        if state is None or (state.trips == 0 and state.open_until <= self._clock()):
            return None  # closed
        seconds_left = state.open_until - self._clock()
        if seconds_left > 0:
            raise _refusal(state, self._key, seconds_left)
        owner = uuid.uuid4().hex
        if not self._state.acquire_lease(self._probe_key, owner, PROBE_LEASE_SECONDS):
            raise _refusal(state, self._key, PROBE_BUSY_RETRY_SECONDS)
        return owner

    def _succeeded(self, state: BreakerState | None) -> None:
        if state is not None:
            if state.trips:
                log.warning("upstream %s answers again: breaker closed", self._key)
            self._state.close_breaker(self._key)

    def _failed(self, error: RegistryError, state: BreakerState | None, *, probing: bool) -> None:
        self._metrics.count(counts.UPSTREAM_FAILURE, rule=self._scope)
        trips = state.trips if state is not None else 0
        if not probing:
            failures = self._state.count_breaker_failure(self._key, error.code, error.message, FAILURE_WINDOW_SECONDS)
            if failures < FAILURE_THRESHOLD:
                return
        seconds = backoff_seconds(trips, error)
        log.warning("upstream %s failing: not asked for %.0f s (%s)", self._key, seconds, error.message)
        self._state.open_breaker(self._key, self._clock() + seconds, error.code, error.message)
        self._metrics.count(counts.UPSTREAM_BREAKER_OPENED, rule=self._scope)


def _refusal(state: BreakerState, key: str, seconds_left: float) -> RegistryError:
    retry_after = max(1, int(seconds_left))
    message = f"not asking {key} for {retry_after} s after: {state.reason}"
    if state.code == TooManyRequests.code:
        return TooManyRequests(message, retry_after=retry_after)
    return Unavailable(message, retry_after=retry_after)
