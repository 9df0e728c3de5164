"""A budget of upstream misses per client: what one client may make the cache ask its upstreams for.

Every request the cache cannot answer from what it holds costs an upstream request (a random digest costs one
each), and the upstreams' rate limits are shared by every client of the cache. So each client (a pull key in token
mode, an address without) may cause at most `limit` misses per window; beyond that it gets 429 with Retry-After.
Hits are never counted or limited. The window slides: the count of the window before weighs by the share of it still
inside the last `window_seconds`, so a burst that straddles a window's end is not allowed twice the limit. The
counts live in the metadata store: every server process and Lambda instance shares them.
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
        """Count one miss for `client`; TooManyRequests once its budget for the last window is spent."""
        if self._policy.limit <= 0:
            return
        width = self._policy.window_seconds
        position = self._clock() / width
        window = math.floor(position)
        elapsed = position - window  # the share of the current window gone
        # Each window's count is kept through the next one, which still reads it.
        used = self._counters.increment_counter(f"misses/{client}/{window}", (window + 2) * width)
        before = self._counters.get_counter(f"misses/{client}/{window - 1}")
        if used + before * (1 - elapsed) > self._policy.limit:
            raise TooManyRequests(
                f"more than {self._policy.limit} requests the cache had to forward upstream within "
                f"{width:.0f} s; cached content is not limited",
                retry_after=max(1, math.ceil(round(self._windows_until_allowed(used, before, elapsed) * width, 3))),
            )

    def _windows_until_allowed(self, used: int, before: int, elapsed: float) -> float:
        """How long, in windows, until one more miss fits: the older count's weight has to fade, and once this
        window's own count is over the limit, into the next window."""
        room = self._policy.limit - 1  # what the counts may weigh besides that one miss
        if used <= room:  # before > 0 here, or there would be room
            return 1 - (room - used) / before - elapsed
        return (1 - elapsed) + max(0.0, 1 - room / used)
