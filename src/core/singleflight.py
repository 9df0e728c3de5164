"""One caller does the work while the others wait for its result: across threads, server processes and Lambda
instances alike, because the lease lives in the metadata store (its Leases role)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from core.errors import Unavailable
from core.ports import Leases

T = TypeVar("T")


class SingleFlight:
    def __init__(
        self,
        leases: Leases,
        *,
        lease_seconds: float = 30.0,  # a holder that died is taken over after this
        wait_seconds: float = 20.0,
        poll_seconds: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._leases = leases
        self._lease_seconds = lease_seconds
        self._wait_seconds = wait_seconds
        self._poll_seconds = poll_seconds
        self._sleep = sleep

    def run(self, key: str, work: Callable[[], T], done: Callable[[], T | None]) -> T:
        """`work()` under the lease for `key`; or, while another holds it, the result `done()` finds once the
        other finished. A holder that fails releases the lease, and a waiter takes over."""
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + self._wait_seconds
        while True:
            if self._leases.acquire_lease(key, owner, self._lease_seconds):
                try:
                    finished = done()  # by someone who held the lease since our caller looked
                    return finished if finished is not None else work()
                finally:
                    self._leases.release_lease(key, owner)
            self._sleep(self._poll_seconds)
            finished = done()
            if finished is not None:
                return finished
            if time.monotonic() > deadline:
                raise Unavailable(f"{key} is being fetched by another request; retry shortly", retry_after=2)
