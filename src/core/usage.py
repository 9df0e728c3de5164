"""Hourly totals of what the cache did, per rule: what `pullthrough stats` and the status page report over 24 hours and
7 days, whichever process (a server worker, a Lambda container) did it.

Counting a hit must not cost a write, so a UsageMeter adds counts up in memory and writes them out as totals, at most
every few seconds (a server) or once a minute (a Lambda container): at most that much is lost when a process dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import astuple, dataclass
from typing import Protocol

from core import metrics as counts

log = logging.getLogger(__name__)

HOUR = 3600
RETENTION_HOURS = 8 * 24  # a week of totals, and a day to spare
TRACKED = (*counts.HITS, *counts.UPSTREAM_ANSWERED, counts.STALE_SERVED, counts.IMAGE_PULL, counts.UPSTREAM_BYTES,
           counts.SERVED_BYTES, counts.UPSTREAM_FAILURE)  # fmt: skip


@dataclass(frozen=True, slots=True)
class UsageKey:
    hour: int  # hours since the epoch
    rule: str  # the rule's scope
    repository: str  # only for IMAGE_PULL; "" for the rule's totals
    name: str


class UsageTotals(Protocol):
    def add_usage(self, totals: Mapping[UsageKey, float]) -> None:
        """Add to the stored totals (and drop those older than RETENTION_HOURS)."""

    def usage(self, since_hour: int) -> list[tuple[UsageKey, float]]:
        """Every total from `since_hour` on."""


def hour_of(timestamp: float) -> int:
    return int(timestamp // HOUR)


class UsageMeter:
    """The Metrics port, kept as hourly totals per rule (and pulls per repository) in a UsageTotals store."""

    def __init__(self, store: UsageTotals, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._pending: defaultdict[UsageKey, float] = defaultdict(float)
        self._lock = threading.Lock()
        self._flushed_at = clock()

    def count(self, name: str, value: float = 1.0, *, rule: str = "", repository: str = "") -> None:
        if name not in TRACKED:
            return
        key = UsageKey(hour_of(self._clock()), rule, repository if name == counts.IMAGE_PULL else "", name)
        with self._lock:
            self._pending[key] += value

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(float)
            self._flushed_at = self._clock()
        if not pending:
            return
        try:
            self._store.add_usage(pending)
        except Exception:  # a store that is down costs these totals, never a request
            log.warning("could not write %d usage totals; they are lost", len(pending), exc_info=True)

    def flush_if_due(self, every_seconds: float) -> None:
        if self._clock() - self._flushed_at >= every_seconds:
            self.flush()


@dataclass(frozen=True, slots=True)
class Traffic:
    """What clients asked one rule (or all) for, over a window."""

    hits: float = 0.0  # answered with no upstream request
    upstream_answered: float = 0.0  # requests that asked an upstream (a HEAD included)
    stale_served: float = 0.0
    pulls: float = 0.0
    upstream_bytes: float = 0.0
    served_bytes: float = 0.0
    upstream_failures: float = 0.0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(*(mine + theirs for mine, theirs in zip(astuple(self), astuple(other), strict=True)))

    @property
    def requests(self) -> float:
        return self.hits + self.upstream_answered + self.stale_served

    @property
    def hit_ratio(self) -> float | None:
        return self.hits / self.requests if self.requests else None

    @property
    def upstream_requests_saved(self) -> float:
        """Each hit would have been at least one upstream request."""
        return self.hits


def traffic(totals: list[tuple[UsageKey, float]], since_hour: int, rule: str | None = None) -> Traffic:
    """The totals of one rule (None: every rule) from `since_hour` on."""
    sums: defaultdict[str, float] = defaultdict(float)
    for key, value in totals:
        if key.hour >= since_hour and (rule is None or key.rule == rule):
            sums[key.name] += value
    return Traffic(
        hits=sum(sums[name] for name in counts.HITS),
        upstream_answered=sum(sums[name] for name in counts.UPSTREAM_ANSWERED),
        stale_served=sums[counts.STALE_SERVED],
        pulls=sums[counts.IMAGE_PULL],
        upstream_bytes=sums[counts.UPSTREAM_BYTES],
        served_bytes=sums[counts.SERVED_BYTES],
        upstream_failures=sums[counts.UPSTREAM_FAILURE],
    )


def most_pulled(totals: list[tuple[UsageKey, float]], rule: str, since_hour: int, limit: int) -> list[tuple[str, int]]:
    pulls: Counter[str] = Counter()
    for key, value in totals:
        if key.rule == rule and key.name == counts.IMAGE_PULL and key.hour >= since_hour:
            pulls[key.repository] += int(value)
    return pulls.most_common(limit)
