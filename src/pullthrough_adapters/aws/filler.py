"""Blob misses on Lambda, where a response cannot stream and API Gateway gives up after 30 seconds.

One instance at a time fills a given blob: it takes a lease in DynamoDB. The lease holder copies a small blob
(known size under the limit, done before the deadline) straight into S3 and redirects the client there. A bigger
one goes to the fill function, which renews the same lease and may copy for up to 15 minutes, while the request
waits for it to land. Requests that find the lease taken wait the same way. Whoever is still waiting when the
request's time is nearly up gets 503 with Retry-After, but nobody ever starts a second upstream fetch. (Registry
clients do not retry a 503 on a blob themselves: a pull that hits it fails, and the next pull finds the blob.)

Both ends of the hand-over are here: `LeasedFiller.fill` dispatches a job with the lease it holds, and
`complete_hand_over` is what the fill function does with it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from core.errors import Unavailable
from core.filling import DeadlinePassed, SizeBound, copy_blob, write_blob
from core.ports import BlobBody, BlobSource, BlobStore, FillJob, FillOrder, FillState, Leases

log = logging.getLogger(__name__)

LEASE_SECONDS = 60  # longer than a synchronous fill can take on Lambda (29 s)
HANDED_OVER_LEASE_SECONDS = 900.0  # the fill function's own timeout
RETRY_AFTER_SECONDS = 5


class FillDispatcher(Protocol):
    """Starts the fill function for a job, asynchronously; `lease_owner` lets it take over the lease."""

    def dispatch(self, job: FillJob, lease_owner: str) -> None: ...


class LeasedFiller:
    def __init__(
        self,
        blobs: BlobStore,
        metadata: FillState,
        dispatcher: FillDispatcher,
        *,
        sync_max_bytes: int,
        sync_seconds: float = 15.0,  # a synchronous copy not done by then goes to the fill function
        wait_seconds: float = 25.0,  # then the request answers, under API Gateway's 30 s
        poll_seconds: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._blobs = blobs
        self._metadata = metadata
        self._dispatcher = dispatcher
        self._sync_max_bytes = sync_max_bytes
        self._sync_seconds = sync_seconds
        self._wait_seconds = wait_seconds
        self._poll_seconds = poll_seconds
        self._sleep = sleep

    def fill(self, job: FillJob, source: BlobSource, on_commit: Callable[[int], None]) -> BlobBody:
        started = time.monotonic()
        owner = uuid.uuid4().hex
        if not self._metadata.acquire_lease(job.lease_key, owner, LEASE_SECONDS):
            return self._wait_for(job, until=started + self._wait_seconds)
        landed = self._landed(job)
        if landed is not None:  # a fill before ours finished (and let go) since the caller looked: no second fetch
            self._metadata.release_lease(job.lease_key, owner)
            return landed
        handed_over = False
        try:
            size: int | None = None
            with source() as upstream_blob:
                SizeBound.of(job, upstream_blob.size)  # refused here, not after a hand-over
                if upstream_blob.size is not None and upstream_blob.size <= self._sync_max_bytes:
                    with contextlib.suppress(DeadlinePassed):
                        writer = self._blobs.writer(job.digest)
                        size = write_blob(upstream_blob, writer, started + self._sync_seconds, job)
            if size is None:  # too big or too slow; the upstream response is closed by now: the fill function
                self._dispatcher.dispatch(job, owner)  # opens its own, under the lease it takes over
                handed_over = True
                log.info("handed %s over to the fill function", job.digest)
                return self._wait_for(job, until=started + self._wait_seconds)
            on_commit(size)
        finally:
            if not handed_over:  # done, failed, or the hand-over itself failed: nobody holds the copy any more
                self._metadata.release_lease(job.lease_key, owner)
        located = self._blobs.locate(job.digest, head=False)
        assert located is not None
        return located

    def _landed(self, job: FillJob) -> BlobBody | None:
        """Where the blob is, if a fill of this job already stored and recorded it."""
        if self._metadata.get_blob(job.scope, job.repository, job.digest) is None:
            return None
        return self._blobs.locate(job.digest, head=False)

    def _wait_for(self, job: FillJob, until: float) -> BlobBody:
        while True:
            landed = self._landed(job)
            if landed is not None:
                return landed
            if time.monotonic() + self._poll_seconds > until:
                raise _being_filled(job)
            self._sleep(self._poll_seconds)


def _being_filled(job: FillJob) -> Unavailable:
    return Unavailable(f"{job.digest} is being copied into the cache; retry shortly", retry_after=RETRY_AFTER_SECONDS)


def complete_hand_over(order: FillOrder, blobs: BlobStore, leases: Leases, lease_owner: str) -> int | None:
    """The fill function's job: copy one blob in, whatever its size, under the lease the request that handed it
    over holds as `lease_owner` (renewing it keeps every other instance waiting instead of fetching too). The size
    stored; None when someone else holds the lease."""
    recorded = order.recorded()
    if recorded is not None and blobs.exists(order.job.digest):  # landed already (a retried invocation)
        return recorded
    if not leases.acquire_lease(order.job.lease_key, lease_owner, HANDED_OVER_LEASE_SECONDS):
        return None
    try:
        size = copy_blob(order.source, blobs.writer(order.job.digest), order.job)
        order.record(size)
        return size
    finally:
        leases.release_lease(order.job.lease_key, lease_owner)
