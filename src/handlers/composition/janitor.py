"""The lifecycle in the background of `serve`: what the scheduled sweep function does on AWS, done by the server.

Every worker process runs a janitor; a lease in the metadata store lets one of them work at a time. Each round it
keeps the content under --max-cache-size (when set), sweeps expired images every --gc-interval, deletes the bytes
orphaned for the grace period, and removes the partial downloads of processes killed mid-fill (on AWS, the bucket's
AbortIncompleteMultipartUpload rule does that).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from core.lifecycle import Lifecycler
from core.ports import Leases

log = logging.getLogger(__name__)

LEASE = "lifecycle"
SIZE_CHECK_SECONDS = 15.0  # how often the size of the content is compared with the cap
LEASE_SECONDS = 900.0  # a janitor that died mid-round is taken over after this


class Janitor:
    def __init__(
        self,
        lifecycler: Lifecycler,
        leases: Leases,
        *,
        sweep_every: float,
        usage: Callable[[], int],
        cap: int | None,
        remove_abandoned: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lifecycler = lifecycler
        self._leases = leases
        self._sweep_every = sweep_every
        self._usage = usage
        self._cap = cap
        self._remove_abandoned = remove_abandoned
        self._clock = clock
        self._owner = uuid.uuid4().hex
        self._next_sweep = clock() + sweep_every
        self._stop = threading.Event()

    @property
    def tick(self) -> float:
        return min(self._sweep_every, SIZE_CHECK_SECONDS) if self._cap is not None else self._sweep_every

    def start(self) -> None:
        threading.Thread(target=self._run, name="janitor", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.run_once()
            except Exception:  # the next round tries again; serving goes on either way
                log.exception("lifecycle: the background round failed")

    def run_once(self) -> None:
        if not self._leases.acquire_lease(LEASE, self._owner, LEASE_SECONDS):
            return  # another worker process is at it
        try:
            if self._cap is not None:
                self._lifecycler.evict(self._usage(), self._cap)
            if self._clock() >= self._next_sweep:
                self._next_sweep = self._clock() + self._sweep_every
                report = self._lifecycler.sweep()  # deletes the orphans past their grace too
            else:
                report = self._lifecycler.delete_orphans()
            self._remove_abandoned()
            if report.tags_forgotten or report.manifests_forgotten or report.blobs_forgotten or report.deleted:
                log.info("lifecycle: %s", report.to_dict())
        finally:
            self._leases.release_lease(LEASE, self._owner)
