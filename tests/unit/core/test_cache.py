"""The pull-through service with real local storage and a counting fake upstream: who goes upstream, and when."""

from __future__ import annotations

import json
import threading
import time

import pytest

from core.cache import PullRecord, PullThroughCache
from core.digest import Digest
from core.errors import (
    BlobUnknown,
    DigestMismatch,
    ManifestUnknown,
    NameUnknown,
    PaginationNumberInvalid,
    TooManyRequests,
    Unavailable,
)
from core.mediatypes import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, Accept
from core.ports import LocalBlob, SizeOnly, StreamedBlob
from tests.conftest import TTL, Clock
from tests.fakes import FakeUpstream

ANY = Accept([])
OCI_ONLY = Accept([OCI_MANIFEST])
DOCKER_ONLY = Accept([DOCKER_MANIFEST])


def read_all(body: StreamedBlob | LocalBlob) -> bytes:
    if isinstance(body, LocalBlob):
        with open(body.path, "rb") as file:
            return file.read()
    return b"".join(body.chunks(0, body.size))


class TestManifestsByTag:
    def test_cold_pull_fetches_once_and_warm_pull_within_ttl_asks_nothing(self, cache, upstream: FakeUpstream):
        digest = upstream.add_image("library/app", "v1")
        first = cache.manifest("up/library/app", "v1", ANY, with_body=True)
        assert first.record.digest == digest
        assert Digest.of(first.data) == digest
        assert upstream.calls == {"get_manifest": 1}

        upstream.calls.clear()
        for _ in range(3):
            again = cache.manifest("up/library/app", "v1", ANY, with_body=True)
            assert again.data == first.data and again.warning is None
        assert upstream.calls == {}

    def test_stale_tag_is_revalidated_with_a_head_only(self, cache, upstream: FakeUpstream, clock: Clock):
        upstream.add_image("library/app", "v1")
        cache.manifest("up/library/app", "v1", ANY, with_body=True)
        clock.advance(TTL + 1)
        upstream.calls.clear()
        cache.manifest("up/library/app", "v1", ANY, with_body=True)
        assert upstream.calls == {"head_manifest": 1}
        # the HEAD restarted the freshness window
        upstream.calls.clear()
        cache.manifest("up/library/app", "v1", ANY, with_body=True)
        assert upstream.calls == {}

    def test_moved_tag_fetches_the_new_digest_once_ttl_expires(self, cache, upstream: FakeUpstream, clock: Clock):
        old = upstream.add_image("library/app", "v1", layer=b"old")
        cache.manifest("up/library/app", "v1", ANY, with_body=False)
        new = upstream.add_image("library/app", "v1", layer=b"new")

        clock.advance(TTL - 1)
        assert cache.manifest("up/library/app", "v1", ANY, with_body=False).record.digest == old
        clock.advance(2)
        upstream.calls.clear()
        assert cache.manifest("up/library/app", "v1", ANY, with_body=True).record.digest == new
        assert upstream.calls == {"head_manifest": 1, "get_manifest": 1}

    def test_zero_ttl_revalidates_every_time(self, cache, upstream: FakeUpstream, rules, clock: Clock):
        from core.rules import Rule, RuleSet

        cache.rule_source = RuleSet([*rules, Rule("always", "http://always.invalid", tag_ttl_seconds=0)])
        upstream.add_image("app", "v1")
        cache.manifest("always/app", "v1", ANY, with_body=False)
        upstream.calls.clear()
        for _ in range(2):
            clock.advance(0.001)
            cache.manifest("always/app", "v1", ANY, with_body=False)
        assert upstream.calls == {"head_manifest": 2}

    @pytest.mark.parametrize("failure", [Unavailable("down"), TooManyRequests("slow down", retry_after=30)])
    def test_stale_tag_is_served_with_a_warning_when_upstream_fails(self, cache, upstream, clock, failure):
        digest = upstream.add_image("library/app", "v1")
        cache.manifest("up/library/app", "v1", ANY, with_body=True)
        clock.advance(TTL + 1)
        upstream.failure = failure
        served = cache.manifest("up/library/app", "v1", ANY, with_body=True)
        assert served.record.digest == digest and served.data is not None
        assert served.warning and failure.code in served.warning

    @pytest.mark.parametrize("failure", [Unavailable("down"), TooManyRequests("slow down", retry_after=30)])
    def test_uncached_tag_fails_with_the_upstream_error(self, cache, upstream, failure):
        upstream.failure = failure
        with pytest.raises(type(failure)):
            cache.manifest("up/library/app", "v1", ANY, with_body=True)

    def test_tag_deleted_upstream_is_unknown_once_stale(self, cache, upstream, clock):
        upstream.add_image("library/app", "v1")
        cache.manifest("up/library/app", "v1", ANY, with_body=True)
        del upstream.tags[("library/app", "v1")]
        clock.advance(TTL + 1)
        with pytest.raises(ManifestUnknown):
            cache.manifest("up/library/app", "v1", ANY, with_body=True)

    def test_library_namespace_is_added_to_one_segment_names(self, cache, upstream):
        digest = upstream.add_image("library/alpine", "3")
        assert cache.manifest("hub/alpine", "3", ANY, with_body=False).record.digest == digest
        upstream.calls.clear()
        # both spellings share one cache entry
        assert cache.manifest("hub/library/alpine", "3", ANY, with_body=False).record.digest == digest
        assert upstream.calls == {}

    def test_unknown_prefix_is_name_unknown(self, cache):
        with pytest.raises(NameUnknown):
            cache.manifest("nowhere/app", "v1", ANY, with_body=True)


class TestManifestsByDigest:
    def test_pull_by_digest_fills_the_cache_and_then_never_asks_again(self, cache, upstream, clock):
        digest = upstream.add_image("library/app", None)
        served = cache.manifest("up/library/app", str(digest), ANY, with_body=True)
        assert Digest.of(served.data) == digest
        clock.advance(10 * TTL)
        upstream.calls.clear()
        upstream.failure = Unavailable("down")
        assert cache.manifest("up/library/app", str(digest), ANY, with_body=True).data == served.data
        assert upstream.calls == {}

    def test_manifest_not_matching_its_digest_is_refused_and_not_cached(self, cache, upstream):
        digest = upstream.add_image("library/app", None)
        data, media_type = upstream.manifests[str(digest)]
        upstream.manifests[str(digest)] = (data + b" ", media_type)
        with pytest.raises(DigestMismatch):
            cache.manifest("up/library/app", str(digest), ANY, with_body=True)
        upstream.manifests[str(digest)] = (data, media_type)
        assert cache.manifest("up/library/app", str(digest), ANY, with_body=True).data == data

    def test_manifest_by_tag_not_matching_its_digest_header_is_refused_and_not_cached(self, cache, upstream):
        digest = upstream.add_image("library/app", "v1")
        upstream.corrupt_manifests = True
        with pytest.raises(DigestMismatch):
            cache.manifest("up/library/app", "v1", ANY, with_body=True)
        upstream.corrupt_manifests = False
        upstream.calls.clear()
        assert cache.manifest("up/library/app", "v1", ANY, with_body=True).record.digest == digest
        assert upstream.calls == {"get_manifest": 1}  # nothing of the refused answer was kept

    def test_unknown_digest(self, cache, upstream):
        upstream.add_image("library/app", None)
        with pytest.raises(ManifestUnknown):
            cache.manifest("up/library/app", "sha256:" + "0" * 64, ANY, with_body=True)


class TestNegotiation:
    def test_an_index_the_client_does_not_accept_gives_it_the_amd64_image_when_it_accepts_that(self, cache, upstream):
        _, children = upstream.add_index("library/multi", "v1")
        served = cache.manifest("up/library/multi", "v1", OCI_ONLY, with_body=True)
        assert served.record.digest == children["amd64"] and Digest.of(served.data) == children["amd64"]
        assert (
            cache.manifest("up/library/multi", "v1", Accept([OCI_INDEX]), with_body=True).record.media_type == OCI_INDEX
        )

    def test_with_no_acceptable_alternative_a_tag_gives_what_it_points_at(self, cache, upstream):
        """As distribution 3 does: a tag that exists is not a 404 because of the client's Accept."""
        index, _ = upstream.add_index("library/multi", "v1")
        docker_image = upstream.add_image("library/docker", "v1", media_type=DOCKER_MANIFEST)
        served = cache.manifest("up/library/multi", "v1", DOCKER_ONLY, with_body=True)
        assert (served.record.digest, served.record.media_type) == (index, OCI_INDEX)
        served = cache.manifest("up/library/docker", "v1", OCI_ONLY, with_body=True)
        assert (served.record.digest, served.record.media_type) == (docker_image, DOCKER_MANIFEST)

    def test_by_digest_a_manifest_is_served_whatever_the_client_accepts(self, cache, upstream):
        """The spec's MUST: a digest names bytes, and the client gets those, with their own Content-Type."""
        index, _ = upstream.add_index("library/multi", "v1", docker=True)
        docker_image = upstream.add_image("library/docker", "v1", media_type=DOCKER_MANIFEST)
        assert cache.manifest("up/library/multi", str(index), OCI_ONLY, with_body=True).record.digest == index
        served = cache.manifest("up/library/docker", str(docker_image), OCI_ONLY, with_body=True)
        assert (served.record.digest, served.record.media_type) == (docker_image, DOCKER_MANIFEST)

    def test_manifest_list_by_tag_gives_old_clients_the_amd64_image(self, cache, upstream):
        _, children = upstream.add_index("library/multi", "v1", docker=True)
        served = cache.manifest("up/library/multi", "v1", DOCKER_ONLY, with_body=True)
        assert served.record.digest == children["amd64"]
        assert served.record.media_type == DOCKER_MANIFEST
        assert Digest.of(served.data) == children["amd64"]

    def test_manifest_list_by_digest_is_served_as_is(self, cache, upstream):
        index, _ = upstream.add_index("library/multi", "v1", docker=True)
        served = cache.manifest("up/library/multi", str(index), DOCKER_ONLY, with_body=True)
        assert served.record.media_type == DOCKER_MANIFEST_LIST

    def test_wildcard_accept_takes_anything(self, cache, upstream):
        index, _ = upstream.add_index("library/multi", "v1")
        assert cache.manifest("up/library/multi", "v1", Accept(["*/*"]), with_body=False).record.digest == index


class TestBlobs:
    def test_cold_blob_streams_once_and_is_served_from_disk_afterwards(self, cache, upstream):
        data = bytes(range(256)) * 4096
        digest = upstream.add_blob("library/app", data)
        body = cache.blob("up/library/app", str(digest), head=False)
        assert isinstance(body, StreamedBlob) and body.size == len(data)
        assert read_all(body) == data  # the last byte comes only once the blob is verified
        wait_until_committed(cache, "up/library/app", digest)
        assert upstream.calls == {"open_blob": 1}

        upstream.calls.clear()
        again = cache.blob("up/library/app", str(digest), head=False)
        assert isinstance(again, LocalBlob) and read_all(again) == data
        assert cache.blob("up/library/app", str(digest), head=True) == again
        assert upstream.calls == {}

    def test_ranges_of_a_streaming_blob(self, cache, upstream):
        data = bytes(range(256)) * 1024
        digest = upstream.add_blob("library/app", data)
        body = cache.blob("up/library/app", str(digest), head=False)
        assert b"".join(body.chunks(1000, 5000)) == data[1000:6000]
        assert b"".join(body.chunks(0, len(data))) == data

    def test_corrupt_upstream_blob_fails_and_leaves_nothing_behind(self, cache, upstream, tmp_path):
        digest = upstream.add_blob("library/app", b"x" * 300_000 + b"y")
        upstream.corrupt_blobs = True
        body = cache.blob("up/library/app", str(digest), head=False)
        received = bytearray()
        with pytest.raises(DigestMismatch):
            for chunk in body.chunks(0, body.size):
                received += chunk
        assert len(received) < body.size  # the client never saw a complete body
        assert not any((tmp_path / "data" / "tmp").iterdir())
        upstream.corrupt_blobs = False
        upstream.calls.clear()
        assert read_all(cache.blob("up/library/app", str(digest), head=False)) == upstream.blobs[str(digest)]
        assert upstream.calls == {"open_blob": 1}

    def test_head_of_an_uncached_blob_asks_the_upstream_for_its_size_only(self, cache, upstream):
        digest = upstream.add_blob("library/app", b"abc")
        assert cache.blob("up/library/app", str(digest), head=True) == SizeOnly(3)
        assert upstream.calls == {"head_blob": 1}

    def test_unknown_blob(self, cache, upstream):
        upstream.add_blob("library/app", b"abc")
        with pytest.raises(BlobUnknown):
            cache.blob("up/library/app", "sha256:" + "1" * 64, head=False)

    def test_concurrent_misses_make_one_upstream_fetch(self, cache, upstream):
        data = b"z" * 5_000_000
        digest = upstream.add_blob("library/app", data)
        upstream.chunk_delay = 0.002  # a download that lasts, so that the eight requests overlap it
        results: list[bytes] = []

        def pull() -> None:
            results.append(read_all(cache.blob("up/library/app", str(digest), head=False)))

        threads = [threading.Thread(target=pull) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [data] * 8
        assert upstream.calls["open_blob"] == 1

    def test_a_blob_cached_for_one_rule_is_served_to_another_only_if_its_upstream_has_it(self, cache, upstream):
        digest = upstream.add_blob("library/app", b"shared")
        read_all(cache.blob("up/library/app", str(digest), head=False))
        wait_until_committed(cache, "up/library/app", digest)
        upstream.calls.clear()
        body = cache.blob("other/library/app", str(digest), head=False)
        assert isinstance(body, LocalBlob)
        assert upstream.calls == {"head_blob": 1}
        with pytest.raises(BlobUnknown):  # the hub rule's upstream has no such repository
            cache.blob("hub/library/nope", str(digest), head=False)


class TestRepositoryBoundaries:
    """A digest cached for one repository reaches another repository of the same rule only once that repository's
    upstream confirms it (one HEAD): a pull key for `up/team-a` never reads what only `up/secret/app` pulled."""

    def test_a_blob_is_not_served_to_a_repository_whose_upstream_lacks_it(self, cache, upstream):
        digest = upstream.add_blob("secret/app", b"private layer")
        upstream.add_blob("team-a", b"something")  # the repository exists upstream, without that blob
        read_all(cache.blob("up/secret/app", str(digest), head=False))
        wait_until_committed(cache, "up/secret/app", digest)
        upstream.calls.clear()
        for head in (False, True):
            with pytest.raises(BlobUnknown):
                cache.blob("up/team-a", str(digest), head=head)
        assert upstream.calls == {"head_blob": 1}  # asked once; the answer is remembered briefly
        assert isinstance(cache.blob("up/secret/app", str(digest), head=False), LocalBlob)

    def test_a_blob_the_other_repository_has_too_is_linked_after_one_head_no_bytes_move(self, cache, upstream):
        digest = upstream.add_blob("library/base", b"shared base layer")
        upstream.add_blob("library/app", b"shared base layer")
        read_all(cache.blob("up/library/base", str(digest), head=False))
        wait_until_committed(cache, "up/library/base", digest)
        upstream.calls.clear()
        assert isinstance(cache.blob("up/library/app", str(digest), head=False), LocalBlob)
        assert isinstance(cache.lookup_blob("up/library/app", str(digest), head=False), LocalBlob)  # linked
        assert upstream.calls == {"head_blob": 1}

    def test_a_manifest_by_digest_likewise(self, cache, upstream):
        digest = upstream.add_image("secret/app", "v1")
        upstream.add_image("team-a", "v1", layer=b"other")
        cache.manifest("up/secret/app", "v1", ANY, with_body=True)
        upstream.calls.clear()
        with pytest.raises(ManifestUnknown):
            cache.manifest("up/team-a", str(digest), ANY, with_body=True)
        assert upstream.calls == {"head_manifest": 1}
        upstream.holders[str(digest)].add("team-a")  # now team-a has it upstream too
        upstream.calls.clear()
        cache._metadata._db.execute("DELETE FROM counters")  # forget the remembered "not found"
        served = cache.manifest("up/team-a", str(digest), ANY, with_body=True)
        assert served.record.digest == digest and Digest.of(served.data) == digest
        assert upstream.calls == {"head_manifest": 1}  # confirmed, and the stored bytes served: no GET

    def test_a_tag_of_the_repository_confirms_its_manifest_without_another_head(self, cache, upstream, clock):
        digest = upstream.add_image("library/base", "v1")
        upstream.add_manifest("library/app", json.loads(upstream.manifests[str(digest)][0]), tag="v1")
        cache.manifest("up/library/base", "v1", ANY, with_body=True)
        upstream.calls.clear()
        assert cache.manifest("up/library/app", "v1", ANY, with_body=True).record.digest == digest
        assert upstream.calls == {"get_manifest": 1}


def wait_until_committed(cache: PullThroughCache, name: str, digest: Digest) -> None:
    """Clients get the last byte once the blob is verified; it is stored (fsync, rename, record) just after."""
    deadline = time.monotonic() + 5
    while cache.lookup_blob(name, str(digest), head=True) is None:
        assert time.monotonic() < deadline, "the blob was never committed"
        time.sleep(0.01)


class TestDiscovery:
    def test_tags_come_from_upstream_and_from_cache_when_it_fails(self, cache, upstream):
        for tag in ("a", "b", "c"):
            upstream.add_image("library/app", tag)
        assert cache.tags("up/library/app", None, None).tags == ["a", "b", "c"]
        page = cache.tags("up/library/app", 2, None)
        assert (page.tags, page.has_more) == (["a", "b"], True)
        cache.manifest("up/library/app", "a", ANY, with_body=False)
        cache.manifest("up/library/app", "c", ANY, with_body=False)
        upstream.failure = Unavailable("down")
        assert cache.tags("up/library/app", None, None).tags == ["a", "c"]
        assert cache.tags("up/library/app", 1, "a").tags == ["c"]
        with pytest.raises(Unavailable):
            cache.tags("up/library/other", None, None)

    def test_bad_page_size(self, cache):
        with pytest.raises(PaginationNumberInvalid):
            cache.tags("up/library/app", -1, None)
        assert cache.tags("up/library/app", 0, None).tags == []

    def test_catalog_lists_cached_repositories(self, cache, upstream):
        upstream.add_image("library/app", "v1")
        upstream.add_image("library/alpine", "3")
        cache.manifest("up/library/app", "v1", ANY, with_body=False)
        cache.manifest("hub/alpine", "3", ANY, with_body=False)
        assert cache.catalog() == ["hub/library/alpine", "up/library/app"]


def test_tags_are_paged_even_when_the_upstream_ignores_n_and_last(cache, upstream, monkeypatch):
    for tag in ("c", "a", "b", "d"):
        upstream.add_image("library/app", tag)
    original = upstream.list_tags
    monkeypatch.setattr(upstream, "list_tags", lambda repository, n, last: original(repository, None, None))
    first = cache.tags("up/library/app", 2, None)
    assert (first.tags, first.has_more) == (["a", "b"], True)
    second = cache.tags("up/library/app", 2, "b")
    assert (second.tags, second.has_more) == (["c", "d"], False)


def test_lookups_answer_hits_and_refuse_anything_that_needs_the_upstream(cache, upstream, clock):
    digest = upstream.add_image("library/app", "v1")
    assert cache.lookup_manifest("up/library/app", "v1", ANY, with_body=True) is None
    cache.manifest("up/library/app", "v1", ANY, with_body=True)
    upstream.calls.clear()
    assert cache.lookup_manifest("up/library/app", "v1", ANY, with_body=True).record.digest == digest
    assert cache.lookup_manifest("up/library/app", str(digest), ANY, with_body=True).record.digest == digest
    clock.advance(TTL + 1)
    # stale: revalidation is the full cache's job
    assert cache.lookup_manifest("up/library/app", "v1", ANY, with_body=True) is None
    assert cache.lookup_blob("up/library/app", str(Digest.of(b"layer")), head=False) is None
    assert upstream.calls == {}


def test_lookups_write_nothing_and_leave_the_pull_to_record_to_the_caller(cache, upstream, clock, tmp_path):
    upstream.add_image("library/app", "v1")
    cache.manifest("up/library/app", "v1", ANY, with_body=False)
    pulled_at = cache._metadata.get_tag("up", "library/app", "v1").pulled_at
    clock.advance(120)  # past the minute a pull is recorded to
    served = cache.lookup_manifest("up/library/app", "v1", ANY, with_body=False)
    assert served.pull == PullRecord("up", "library/app", "v1", None, clock())
    assert cache._metadata.get_tag("up", "library/app", "v1").pulled_at == pulled_at  # nothing written yet
    cache.record_pull(served.pull)
    assert cache._metadata.get_tag("up", "library/app", "v1").pulled_at == clock()
    clock.advance(10)  # within the minute: nothing to record
    assert cache.lookup_manifest("up/library/app", "v1", ANY, with_body=False).pull is None


def test_catalog_names_root_rule_repositories_without_prefix(cache, upstream, rules):
    from core.rules import Rule, RuleSet

    cache.rule_source = RuleSet([*rules, Rule("", "https://root.invalid", library_namespace=True)])
    upstream.add_image("library/alpine", "3")
    cache.manifest("alpine", "3", ANY, with_body=False)
    assert cache.catalog() == ["library/alpine"]


def test_reloading_rules_load_lazily_and_reload_after_the_interval():
    from core.rules import ReloadingRules, Rule, RuleSet

    loads: list[int] = []
    now = [0.0]

    def load() -> RuleSet:
        loads.append(1)
        return RuleSet([Rule(f"r{len(loads)}", "https://a.example")])

    rules = ReloadingRules(load, 60, clock=lambda: now[0])
    assert loads == []  # nothing at construction (a Lambda import, a SnapStart snapshot)
    assert rules.current().by_prefix("r1") is not None
    now[0] = 59
    assert rules.current().by_prefix("r1") is not None and len(loads) == 1
    now[0] = 61
    assert rules.current().by_prefix("r2") is not None


class TestSingleFlight:
    def run_concurrently(self, count: int, call) -> list:
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def test_concurrent_cold_pulls_of_a_tag_make_one_upstream_request(self, cache, upstream):
        digest = upstream.add_image("library/app", "v1")
        upstream.delay = 0.2
        served = self.run_concurrently(8, lambda: cache.manifest("up/library/app", "v1", ANY, with_body=True))
        assert {result.record.digest for result in served} == {digest} and len(served) == 8
        assert upstream.calls == {"get_manifest": 1}

    def test_concurrent_revalidations_of_a_stale_tag_make_one_head(self, cache, upstream, clock):
        upstream.add_image("library/app", "v1")
        cache.manifest("up/library/app", "v1", ANY, with_body=False)
        clock.advance(TTL + 1)
        upstream.calls.clear()
        upstream.delay = 0.2
        self.run_concurrently(8, lambda: cache.manifest("up/library/app", "v1", ANY, with_body=False))
        assert upstream.calls == {"head_manifest": 1}

    def test_a_waiter_takes_an_answer_that_came_just_before_it_asked(self, tmp_path, upstream, clock, rules):
        """The holder's upstream answered at t, this request asked at t + 0.05 s and found no tag yet (the holder had
        not recorded it): the answer is fresh for the rule's TTL, so the waiter takes it rather than ask again (CI saw
        a tag fetched twice by 8 concurrent pulls this way)."""
        from core.ports import ManifestRecord, TagRecord
        from pullthrough_adapters.local.blob_store import FileBlobStore
        from pullthrough_adapters.local.filler import TeeFiller
        from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
        from tests.fakes import FakeUpstreams

        blobs = FileBlobStore(tmp_path / "data")
        metadata = SqliteMetadataStore(tmp_path / "data" / "metadata.sqlite3", clock=clock)
        cache = PullThroughCache(rules, metadata, blobs, FakeUpstreams(upstream), TeeFiller(blobs, metadata),
                                 clock=clock)  # fmt: skip
        digest = upstream.add_image("library/app", "v1")
        key = "tag/up/library/app/v1"
        assert metadata.acquire_lease(key, "holder", 30)  # the holder's upstream answered at clock.now
        answered_at = clock.now
        clock.advance(0.05)
        waiter = threading.Thread(target=lambda: served.append(cache.manifest("up/library/app", "v1", ANY,
                                                                               with_body=False)))  # fmt: skip
        served: list = []
        waiter.start()
        time.sleep(0.2)  # the waiter found no tag and waits on the holder's lease
        record = ManifestRecord(digest, OCI_MANIFEST, len(upstream.manifests[str(digest)][0]))
        metadata.put_tag("up", "library/app", "v1", TagRecord(record, answered_at, answered_at))
        metadata.release_lease(key, "holder")
        waiter.join(5)
        assert [result.record.digest for result in served] == [digest]
        assert upstream.calls == {}

    def test_concurrent_pulls_by_digest_make_one_upstream_request(self, cache, upstream):
        digest = upstream.add_image("library/app", None)
        upstream.delay = 0.2
        self.run_concurrently(6, lambda: cache.manifest("up/library/app", str(digest), ANY, with_body=True))
        assert upstream.calls == {"get_manifest": 1}

    def test_a_failed_holder_lets_a_waiter_take_over(self, tmp_path):
        from core.singleflight import SingleFlight
        from pullthrough_adapters.local.metadata_store import SqliteMetadataStore

        flights = SingleFlight(SqliteMetadataStore(tmp_path / "m.sqlite3"), poll_seconds=0.01)
        attempts: list[str] = []
        started = threading.Event()

        def failing() -> str:
            attempts.append("first")
            started.set()
            time.sleep(0.1)
            raise Unavailable("upstream down")

        failed: list[Exception] = []
        first = threading.Thread(target=lambda: _capture(failed, lambda: flights.run("k", failing, lambda: None)))
        first.start()
        started.wait()
        result = flights.run("k", lambda: attempts.append("second") or "done", lambda: None)
        first.join()
        assert result == "done" and attempts == ["first", "second"] and isinstance(failed[0], Unavailable)


def _capture(errors: list[Exception], call) -> None:
    try:
        call()
    except Exception as exc:
        errors.append(exc)


def test_max_staleness_turns_an_old_copy_into_the_upstream_error(cache, upstream, clock, rules):
    from core.rules import Rule, RuleSet

    cache.rule_source = RuleSet([*rules, Rule("strict", "http://strict.invalid", tag_ttl_seconds=60,
                                              max_stale_seconds=3600)])  # fmt: skip
    upstream.add_image("app", "v1")
    cache.manifest("strict/app", "v1", ANY, with_body=False)
    upstream.failure = Unavailable("down")
    clock.advance(1800)
    assert cache.manifest("strict/app", "v1", ANY, with_body=False).warning  # stale, within the limit
    clock.advance(3600)  # and past the back-off, so the upstream is asked again
    with pytest.raises(Unavailable):
        cache.manifest("strict/app", "v1", ANY, with_body=False)
