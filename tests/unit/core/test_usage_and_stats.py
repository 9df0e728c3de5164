"""Usage totals and the operator's report: what is counted, into which hour and window, and what a rule's report
says after real pulls through the cache (SQLite records, a fake upstream)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from core import metrics as counts
from core.cache import PullThroughCache
from core.mediatypes import Accept
from core.ports import BreakerState
from core.stats import health, report
from core.usage import HOUR, Traffic, UsageKey, UsageMeter, hour_of, most_pulled, traffic
from tests.conftest import Clock
from tests.fakes import FakeUpstream

NOW = 1_800_000_000.0  # on an hour boundary


class MemoryTotals:
    def __init__(self) -> None:
        self.totals: dict[UsageKey, float] = {}
        self.writes = 0
        self.down = False

    def add_usage(self, totals: Mapping[UsageKey, float]) -> None:
        if self.down:
            raise ConnectionError("store down")
        self.writes += 1
        for key, value in totals.items():
            self.totals[key] = self.totals.get(key, 0.0) + value

    def usage(self, since_hour: int) -> list[tuple[UsageKey, float]]:
        return [(key, value) for key, value in self.totals.items() if key.hour >= since_hour]


def test_the_meter_adds_up_in_memory_and_writes_hourly_totals_when_flushed():
    now = [NOW]
    store = MemoryTotals()
    meter = UsageMeter(store, clock=lambda: now[0])
    meter.count(counts.BLOB_HIT, rule="hub")
    meter.count(counts.BLOB_HIT, rule="hub")
    meter.count(counts.SERVED_BYTES, 500, rule="hub", repository="library/app")  # repositories: pulls only
    meter.count(counts.IMAGE_PULL, rule="hub", repository="library/app")
    meter.count(counts.REFRESH_UPDATED, rule="hub")  # not a usage total
    assert store.writes == 0
    meter.flush_if_due(5.0)
    assert store.writes == 0  # not due yet
    now[0] += 5
    meter.count(counts.BLOB_MISS, rule="hub")
    meter.flush_if_due(5.0)
    hour = hour_of(NOW)
    assert store.totals == {
        UsageKey(hour, "hub", "", counts.BLOB_HIT): 2,
        UsageKey(hour, "hub", "", counts.SERVED_BYTES): 500,
        UsageKey(hour, "hub", "library/app", counts.IMAGE_PULL): 1,
        UsageKey(hour, "hub", "", counts.BLOB_MISS): 1,
    }
    meter.flush()
    assert store.writes == 1  # nothing pending: nothing written


def test_a_store_that_is_down_costs_the_totals_never_the_caller(caplog: pytest.LogCaptureFixture):
    store = MemoryTotals()
    meter = UsageMeter(store, clock=lambda: NOW)
    meter.count(counts.TAG_HIT, rule="hub")
    store.down = True
    meter.flush()
    assert "could not write 1 usage totals" in caplog.text
    store.down = False
    meter.flush()
    assert store.totals == {}


def test_traffic_windows_split_by_hour_and_rule():
    hour = hour_of(NOW)
    totals = [
        (UsageKey(hour, "hub", "", counts.TAG_HIT), 3.0),
        (UsageKey(hour, "hub", "", counts.TAG_REVALIDATED), 1.0),
        (UsageKey(hour - 30, "hub", "", counts.BLOB_HIT), 6.0),  # yesterday
        (UsageKey(hour - 30, "hub", "", counts.BLOB_MISS), 2.0),
        (UsageKey(hour, "ghcr", "", counts.STALE_SERVED), 1.0),
        (UsageKey(hour, "hub", "a", counts.IMAGE_PULL), 2.0),
        (UsageKey(hour - 30, "hub", "b", counts.IMAGE_PULL), 5.0),
    ]
    day = traffic(totals, hour - 23, "hub")
    assert (day.hits, day.upstream_answered, day.requests, day.hit_ratio) == (3, 1, 4, 0.75)
    week = traffic(totals, hour - 167, "hub")
    assert (week.hits, week.upstream_answered, week.pulls, week.upstream_requests_saved) == (9, 3, 7, 9)
    everything = traffic(totals, hour - 167)
    assert everything.stale_served == 1 and everything.requests == 13
    assert traffic([], hour).hit_ratio is None
    assert most_pulled(totals, "hub", hour - 167, 5) == [("b", 5), ("a", 2)]
    assert most_pulled(totals, "hub", hour - 23, 5) == [("a", 2)]
    assert day + Traffic(hits=1, served_bytes=10) == Traffic(
        hits=4, upstream_answered=1, pulls=2, served_bytes=10
    )  # fmt: skip


def test_health_reads_the_breaker():
    assert health(FixedBreakers(None), "https://up", NOW).state == "up"
    failing = BreakerState(failures=2, open_until=0.0, trips=0, code="UNAVAILABLE", reason="refused")
    seen = health(FixedBreakers(failing), "https://up", NOW)
    assert (seen.state, seen.failures, seen.retry_at) == ("failing", 2, None)
    alone = BreakerState(failures=5, open_until=NOW + 30, trips=1, code="UNAVAILABLE", reason="timed out")
    left = health(FixedBreakers(alone), "https://up", NOW)
    assert (left.state, left.retry_at, left.reason) == ("left alone", NOW + 30, "timed out")


class FixedBreakers:
    def __init__(self, state: BreakerState | None) -> None:
        self.state = state

    def get_breaker(self, upstream: str) -> BreakerState | None:
        return self.state


def test_the_report_after_pulls_through_the_cache(cache: PullThroughCache, upstream: FakeUpstream, clock: Clock):
    layer = b"layer " * 1000
    upstream.add_image("library/app", "v1", layer=layer)
    meter = UsageMeter(cache._metadata, clock=clock)
    cache._metrics = meter
    for _ in range(2):
        served = cache.lookup_manifest("up/library/app", "v1", Accept.parse([]), with_body=True)
        if served is None:
            served = cache.manifest("up/library/app", "v1", Accept.parse([]), with_body=True)
        if served.pull is not None:
            cache.record_pull(served.pull)
    meter.flush()
    made = report(cache.rules, cache._metadata, cache._metadata, cache._metadata, clock() + HOUR)
    (rule,) = [entry for entry in made.rules if entry.prefix == "up"]
    assert rule.inventory.repositories == 1 and rule.inventory.tags == 1 and rule.inventory.manifests == 1
    assert rule.inventory.last_pull is not None and rule.inventory.images_with_referrers == 0
    assert (rule.day.hits, rule.day.upstream_answered, rule.day.pulls) == (1, 1, 2)
    assert rule.most_pulled == [("up/library/app", 2)]
    assert rule.health.state == "up"
    assert made.to_dict()["rules"][0]["day"]["hit_ratio"] == 0.5  # type: ignore[index]


def test_the_report_counts_the_images_whose_referrers_are_cached(cache: PullThroughCache, upstream: FakeUpstream,
                                                                 clock: Clock):  # fmt: skip
    signed, unsigned = upstream.add_image("library/app", "v1"), upstream.add_image("library/app", "v2", layer=b"2")
    upstream.add_referrer("library/app", signed, "application/vnd.example.sig", b"signed")
    upstream.add_image("library/app", f"sha256-{signed.encoded}.sig", layer=b"cosign's own tag")
    for tag in ("v1", "v2", f"sha256-{signed.encoded}.sig"):
        cache.manifest("up/library/app", tag, Accept.parse([]), with_body=False)
    for subject in (signed, unsigned):
        cache.referrers("up/library/app", str(subject), None)
    made = report(cache.rules, cache._metadata, cache._metadata, cache._metadata, clock())
    (rule,) = [entry for entry in made.rules if entry.prefix == "up"]
    # tags: v1, v2, the .sig tag and both referrers answers (the unsigned image's is the empty index)
    assert rule.inventory.images_with_referrers == 1 and rule.inventory.tags == 5
