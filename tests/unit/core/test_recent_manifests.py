"""Manifests kept in memory per container: bounded, by digest only (a tag is always read), per repository, and
pulls still recorded for the lifecycle."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.cache import PullThroughCache
from core.digest import Digest
from core.mediatypes import OCI_MANIFEST, Accept
from core.ports import ManifestRecord
from core.recent_manifests import RecentManifests
from core.rules import RuleSet
from pullthrough_adapters.local.blob_store import FileBlobStore
from pullthrough_adapters.local.filler import TeeFiller
from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
from tests.conftest import TTL, Clock
from tests.fakes import FakeUpstream, FakeUpstreams

ANY = Accept([])


class Counted:
    """A store whose every call is counted by name: what a network round trip would cost on AWS."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


@pytest.fixture
def stores(tmp_path: Path, clock: Clock) -> tuple[Counted, Counted]:
    blobs = FileBlobStore(tmp_path / "data")
    return Counted(SqliteMetadataStore(tmp_path / "data" / "m.sqlite3", clock=clock)), Counted(blobs)


@pytest.fixture
def cache(stores, upstream: FakeUpstream, clock: Clock, rules: RuleSet) -> PullThroughCache:
    metadata, blobs = stores
    return PullThroughCache(rules, metadata, blobs, FakeUpstreams(upstream), TeeFiller(blobs, metadata), clock,
                            recent=RecentManifests(clock=clock))  # fmt: skip


def record(digest: Digest, size: int = 10) -> ManifestRecord:
    return ManifestRecord(digest, OCI_MANIFEST, size)


class TestRecentManifests:
    def test_bytes_are_bounded_least_recently_used_first(self):
        recent = RecentManifests(max_bytes=10)
        a, b, c = (Digest.of(x) for x in (b"a", b"b", b"c"))
        recent.remember_data(a, b"1234")
        recent.remember_data(b, b"1234")
        assert recent.data(a) == b"1234"  # a is now the most recently used
        recent.remember_data(c, b"1234")
        assert (recent.data(a), recent.data(b), recent.data(c)) == (b"1234", None, b"1234")
        recent.remember_data(Digest.of(b"big"), b"x" * 11)  # larger than the whole bound: not kept
        assert recent.data(Digest.of(b"big")) is None and recent.data(a) == b"1234"

    def test_records_are_bounded_in_number_and_age(self, clock: Clock):
        recent = RecentManifests(max_records=2, max_age_seconds=60, clock=clock)
        first, second, third = (Digest.of(x) for x in (b"1", b"2", b"3"))
        for digest in (first, second, third):
            recent.remember_record("up", "app", record(digest))
        assert recent.record("up", "app", first) is None
        assert recent.record("up", "app", third) == record(third)
        clock.advance(60)
        assert recent.record("up", "app", third) is None

    def test_records_are_per_rule_and_repository(self):
        recent = RecentManifests()
        digest = Digest.of(b"m")
        recent.remember_record("up", "app", record(digest))
        assert recent.record("up", "other", digest) is None and recent.record("hub", "app", digest) is None

    def test_a_recorded_pull_moves_the_next_due_one(self):
        recent = RecentManifests()
        digest = Digest.of(b"m")
        recent.remember_record("up", "app", record(digest))
        recent.pulled("up", "app", digest, 123.0)
        kept = recent.record("up", "app", digest)
        assert kept is not None and kept.pulled_at == 123.0


class TestTheCacheWithRecentManifests:
    def test_a_repeated_pull_by_digest_reads_no_store(self, cache, stores, upstream: FakeUpstream):
        digest = upstream.add_image("library/app", "v1")
        first = cache.manifest("up/library/app", str(digest), ANY, with_body=True)
        for store in stores:
            store.calls.clear()
        for _ in range(5):
            served = cache.lookup_manifest("up/library/app", str(digest), ANY, with_body=True)
            assert served is not None and served.data == first.data
            assert cache.manifest("up/library/app", str(digest), ANY, with_body=True).data == first.data
        assert [store.calls for store in stores] == [Counter(), Counter()]

    def test_a_tag_is_read_every_time_and_follows_the_upstream(self, cache, stores, upstream, clock: Clock):
        old = upstream.add_image("library/app", "v1", layer=b"old")
        cache.manifest("up/library/app", "v1", ANY, with_body=True)
        metadata, blobs = stores
        metadata.calls.clear()
        blobs.calls.clear()
        for _ in range(3):
            assert cache.lookup_manifest("up/library/app", "v1", ANY, with_body=True).record.digest == old
        assert metadata.calls["get_tag"] == 3 and blobs.calls == Counter()  # the bytes came from memory
        new = upstream.add_image("library/app", "v1", layer=b"new")
        clock.advance(TTL + 1)
        assert cache.manifest("up/library/app", "v1", ANY, with_body=True).record.digest == new

    def test_another_repository_is_not_answered_from_memory(self, cache, upstream: FakeUpstream):
        digest = upstream.add_image("library/app", "v1")
        cache.manifest("up/library/app", str(digest), ANY, with_body=True)
        assert cache.lookup_manifest("up/library/other", str(digest), ANY, with_body=True) is None
        upstream.calls.clear()
        upstream.holders[str(digest)].add("library/other")
        upstream.repositories.add("library/other")
        cache.manifest("up/library/other", str(digest), ANY, with_body=True)
        assert upstream.calls == {"head_manifest": 1}  # its upstream confirmed it; the bytes were not fetched again

    def test_pulls_served_from_memory_are_still_recorded(self, cache, stores, upstream, rules, clock: Clock):
        digest = upstream.add_image("library/app", "v1")
        cache.manifest("up/library/app", str(digest), ANY, with_body=True)
        metadata, _ = stores
        metadata.calls.clear()
        due_every = rules.route("up/library/app").rule.pull_record_seconds
        for _ in range(3):
            cache.manifest("up/library/app", str(digest), ANY, with_body=True)
            clock.advance(due_every / 2)
        assert metadata.calls == Counter({"record_manifest_pull": 1})  # at the third, one interval after the first
