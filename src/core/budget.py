"""A budget of upstream misses per client: what one client may make the cache ask its upstreams for.

Every request the cache cannot answer from what it holds costs an upstream request (a random digest costs one
each), and the upstreams' rate limits are shared by every client of the cache. So each client (a pull key in token
mode, an address without) may cause at most `limit` misses per window; beyond that it gets 429 with Retry-After.
Hits are never counted or limited. The counts live in the metadata store: every server process and Lambda instance
shares them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import TooManyRequests
from core.ports import Counters


@dataclass(frozen=True, slots=True)
class MissBudgetPolicy:
    limit: int  # misses per window; 0 turns the budget off
    window_seconds: float = 60.0


class MissBudget:
    def __init__(self, counters: Counters, policy: MissBudgetPolicy, clock: Callable[[], float] = time.time) -> None:
        self._counters = counters
        self._policy = policy
        self._clock = clock

    def charge(self, client: str) -> None:
        """Count one miss for `client`; TooManyRequests once its budget for this window is spent."""
        if self._policy.limit <= 0:
            return
        now = self._clock()
        window = math.floor(now / self._policy.window_seconds)
        ends_at = (window + 1) * self._policy.window_seconds
        used = self._counters.increment_counter(f"misses/{client}/{window}", ends_at)
        if used > self._policy.limit:
            raise TooManyRequests(
                f"more than {self._policy.limit} requests the cache had to forward upstream within "
                f"{self._policy.window_seconds:.0f} s; cached content is not limited",
                retry_after=max(1, math.ceil(ends_at - now)),
            )
