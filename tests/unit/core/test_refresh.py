"""Scheduled and manual refresh: which tags are revalidated, what reaches the upstream, what events say."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.cache import PullThroughCache
from core.errors import Unavailable
from core.mediatypes import Accept
from core.ports import RateLimit, SyncEvent
from core.refresh import Refresher
from pullthrough_adapters.local.blob_store import FileBlobStore
from pullthrough_adapters.local.filler import TeeFiller
from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
from tests.conftest import TTL, Clock
from tests.fakes import FakeUpstream, FakeUpstreams

ANY = Accept([])
DAY = 86400.0


class RecordedEvents:
    def __init__(self) -> None:
        self.events: list[SyncEvent] = []

    def publish(self, event: SyncEvent) -> None:
        self.events.append(event)


@pytest.fixture
def events() -> RecordedEvents:
    return RecordedEvents()


@pytest.fixture
def cache(tmp_path: Path, upstream: FakeUpstream, clock: Clock, rules) -> PullThroughCache:
    blobs = FileBlobStore(tmp_path)
    metadata = SqliteMetadataStore(tmp_path / "metadata.sqlite3")
    return PullThroughCache(rules, metadata, blobs, FakeUpstreams(upstream), TeeFiller(blobs, metadata), clock)


@pytest.fixture
def refresher(cache: PullThroughCache, events: RecordedEvents, clock: Clock) -> Refresher:
    return Refresher(cache, cache._metadata, events, clock=clock)


def test_refresh_revalidates_stale_recently_pulled_tags_with_heads_only(cache, refresher, upstream, clock, events):
    for tag in ("a", "b"):
        upstream.add_image("library/app", tag)
        cache.manifest("up/library/app", tag, ANY, with_body=False)
    clock.advance(TTL + 1)
    upstream.calls.clear()
    outcomes = refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=100)
    assert sorted((o.name, o.tag, o.status) for o in outcomes) == [("up/library/app", "a", "unchanged"),
                                                                     ("up/library/app", "b", "unchanged")]  # fmt: skip
    assert upstream.calls == {"head_manifest": 2}
    assert events.events == []  # nothing changed
    upstream.calls.clear()
    cache.manifest("up/library/app", "a", ANY, with_body=False)  # confirmed by the refresh: a hit
    assert upstream.calls == {}
    assert refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=100) == []  # nothing stale any more


def test_refresh_fetches_a_moved_tag_so_the_next_pull_gets_it_without_asking(cache, refresher, upstream, clock, events):
    upstream.add_image("library/app", "v1", layer=b"old")
    old = cache.manifest("up/library/app", "v1", ANY, with_body=False).record.digest
    new = upstream.add_image("library/app", "v1", layer=b"new")
    clock.advance(TTL + 1)
    [outcome] = refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=100)
    assert (outcome.status, outcome.previous_digest, outcome.digest) == ("updated", str(old), str(new))
    upstream.calls.clear()
    assert cache.manifest("up/library/app", "v1", ANY, with_body=True).record.digest == new
    assert upstream.calls == {}
    [event] = events.events
    assert event.detail() == {
        "sync-status": "SUCCESS", "ecr-repository-prefix": "up", "repository-name": "library/app",
        "upstream-registry-url": "http://upstream.invalid", "image-tag": "v1", "image-digest": str(new),
    }  # fmt: skip


def test_refresh_skips_tags_nobody_pulled_lately_and_is_bounded(cache, refresher, upstream, clock):
    for tag in ("a", "b", "c"):
        upstream.add_image("library/app", tag)
        cache.manifest("up/library/app", tag, ANY, with_body=False)
        clock.advance(1)
    clock.advance(40 * DAY)
    cache.manifest("up/library/app", "c", ANY, with_body=False)  # stale: revalidated by this pull, and pulled
    clock.advance(TTL + 1)
    assert [o.tag for o in refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=100)] == ["c"]
    # a refresh is not a pull: a tag nobody pulls drops out of the window eventually
    clock.advance(31 * DAY)
    assert refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=100) == []


def test_refresh_leaves_the_upstreams_last_pulls_to_clients(cache, refresher, upstream, clock, events):
    upstream.add_image("library/app", "v1", layer=b"old")
    old = cache.manifest("up/library/app", "v1", ANY, with_body=False).record.digest
    new = upstream.add_image("library/app", "v1", layer=b"new")
    clock.advance(TTL + 1)
    upstream.rate_limit = RateLimit(remaining=10, limit=100)  # a tenth of the allowance is kept for clients
    upstream.calls.clear()
    [deferred] = refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=10)
    assert (deferred.status, deferred.digest) == ("deferred", str(old))
    assert deferred.reason == "the upstream allows 10 more pulls for now; kept for clients"
    assert upstream.calls == {"head_manifest": 1}  # HEADs are free on Docker Hub; the GET would have been a pull
    assert events.events == []  # not a failure: nothing to alarm on
    # the tag is still stale: the next run tries again, and a client's own pull spends what it needs
    upstream.rate_limit = RateLimit(remaining=11, limit=100)
    [updated] = refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=10)
    assert (updated.status, updated.digest) == ("updated", str(new))


def test_a_refresh_that_needs_no_pull_goes_ahead_whatever_is_left(cache, refresher, upstream, clock):
    first = upstream.add_image("library/app", "v1", layer=b"one")
    cache.manifest("up/library/app", "v1", ANY, with_body=False)
    second = upstream.add_image("library/app", "v1", layer=b"two")
    cache.manifest("up/library/app", f"{second}", ANY, with_body=False)  # already cached by digest
    clock.advance(TTL + 1)
    upstream.rate_limit = RateLimit(remaining=0, limit=None)
    [outcome] = refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=10)
    assert (outcome.status, outcome.previous_digest, outcome.digest) == ("updated", str(first), str(second))


def test_limit_bounds_a_run_and_the_next_run_carries_on(cache, refresher, upstream, clock):
    for tag in ("a", "b", "c"):
        upstream.add_image("library/app", tag)
        cache.manifest("up/library/app", tag, ANY, with_body=False)
    clock.advance(TTL + 1)
    first = refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=2)
    second = refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=2)
    assert len(first) == 2 and len(second) == 1
    assert {o.tag for o in first + second} == {"a", "b", "c"}


def test_failures_are_reported_and_published_and_the_cached_tag_kept(cache, refresher, upstream, clock, events):
    digest = upstream.add_image("library/app", "v1")
    cache.manifest("up/library/app", "v1", ANY, with_body=False)
    clock.advance(TTL + 1)
    upstream.failure = Unavailable("upstream down")
    [outcome] = refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=10)
    assert outcome.status == "failed" and outcome.reason == "UNAVAILABLE: upstream down"
    assert events.events[0].detail()["sync-status"] == "FAILED"
    assert events.events[0].detail()["failure-code"] == "UNAVAILABLE"
    served = cache.manifest("up/library/app", "v1", ANY, with_body=False)
    assert served.record.digest == digest and served.warning


def test_manual_refresh_of_one_image_answers_what_changed(refresher, upstream, clock):
    digest = upstream.add_image("library/app", "v1")
    assert refresher.refresh_tag("up/library/app", "v1").status == "updated"  # never cached: fetched now
    assert refresher.refresh_tag("up/library/app", "v1").status == "unchanged"
    assert refresher.refresh_tag("up/library/app", "v1").digest == str(digest)
    assert refresher.refresh_tag("up/library/app", "nope").status == "failed"
    moved = upstream.add_image("library/app", "v1", layer=b"moved")
    clock.advance(1)  # the cached tag is a second old, fresh: the upstream is asked all the same
    assert refresher.refresh_tag("up/library/app", "v1").digest == str(moved)


def test_rules_with_zero_ttl_are_left_to_pulls(cache, refresher, upstream, clock, rules):
    from core.rules import Rule, RuleSet

    cache.rule_source = RuleSet([*rules, Rule("always", "http://always.invalid", tag_ttl_seconds=0)])
    upstream.add_image("app", "v1")
    cache.manifest("always/app", "v1", ANY, with_body=False)
    clock.advance(DAY)
    assert refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=10) == []


def test_a_refresh_prefetches_the_blobs_of_the_rules_platforms(cache, refresher, upstream, clock, rules):
    import json

    from core.ports import LocalBlob
    from core.rules import Rule, RuleSet

    cache.rule_source = RuleSet([*rules, Rule("pre", "http://pre.invalid", tag_ttl_seconds=TTL,
                                              prefetch_platforms=("linux/arm64",))])  # fmt: skip
    upstream.add_image("multi", "v1")
    cache.manifest("pre/multi", "v1", ANY, with_body=False)
    _, children = upstream.add_index("multi", "v1")
    clock.advance(TTL + 1)
    [outcome] = [o for o in refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=10) if o.name == "pre/multi"]
    assert outcome.status == "updated"

    def blobs_of(child) -> list[str]:
        document = json.loads(upstream.manifests[str(child)][0])
        return [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]

    for digest in blobs_of(children["arm64"]):
        assert isinstance(cache.lookup_blob("pre/multi", digest, head=False), LocalBlob)
    for digest in blobs_of(children["amd64"]):
        assert cache.lookup_blob("pre/multi", digest, head=False) is None


def test_a_failing_prefetch_keeps_the_update_and_the_rest_of_the_run(cache, refresher, upstream, clock, rules):
    from core.rules import Rule, RuleSet

    cache.rule_source = RuleSet([*rules, Rule("pre", "http://pre.invalid", tag_ttl_seconds=TTL,
                                              prefetch_platforms=("linux/arm64",))])  # fmt: skip
    for repository in ("multi", "single"):
        upstream.add_image(repository, "v1")
        cache.manifest(f"pre/{repository}", "v1", ANY, with_body=False)
    index, children = upstream.add_index("multi", "v1")
    del upstream.manifests[str(children["arm64"])]  # the platform's manifest is gone upstream
    upstream.add_image("single", "v1", layer=b"moved")
    clock.advance(TTL + 1)
    outcomes = {o.name: o for o in refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=10)}
    assert outcomes["pre/multi"].status == "updated" and outcomes["pre/multi"].digest == str(index)
    assert outcomes["pre/single"].status == "updated"


def test_names_are_those_clients_pull_and_rules_are_applied_again(cache, refresher, upstream, clock, rules):
    from core.rules import Rule, RuleSet

    mapped = Rule("my-app", "http://mapped.invalid", tag_ttl_seconds=TTL, upstream_repository_prefix="org")
    cache.rule_source = RuleSet([*rules, mapped])
    upstream.add_image("org/x", "v1")
    upstream.add_image("library/app", "v1")
    cache.manifest("my-app/x", "v1", ANY, with_body=False)
    cache.manifest("up/library/app", "v1", ANY, with_body=False)
    assert "my-app/x" in cache.catalog()  # the name that pulls it, not my-app/org/x
    clock.advance(TTL + 1)
    cache.rule_source = RuleSet([Rule("up", "http://upstream.invalid", tag_ttl_seconds=TTL, deny=("library/*",)),
                                 mapped])  # fmt: skip
    upstream.calls.clear()
    outcomes = {o.name: o for o in refresher.refresh_stale(pulled_within_seconds=30 * DAY, limit=10)}
    assert outcomes["my-app/x"].status == "unchanged"
    assert outcomes["up/library/app"].status == "failed" and outcomes["up/library/app"].reason.startswith("DENIED")
    assert upstream.calls == {"head_manifest": 1}  # the denied repository was not asked about


def test_a_manual_refresh_checks_the_name_and_tag_before_asking(refresher, upstream, rules, cache):
    from core.rules import Rule, RuleSet

    cache.rule_source = RuleSet([*rules, Rule("strict", "http://s.invalid", allowed_tags=r"v\d+")])
    outcomes = [refresher.refresh_tag("nowhere/x", "v1"), refresher.refresh_tag("up/library/app", "a?b"),
                refresher.refresh_tag("strict/app", "latest"), refresher.refresh_tag("up/Bad", "v1")]  # fmt: skip
    assert [o.reason.split(":")[0] for o in outcomes if o.reason] == [
        "NAME_UNKNOWN",
        "MANIFEST_UNKNOWN",
        "DENIED",
        "NAME_INVALID",
    ]
    assert upstream.calls == {}
