"""What every metadata backend must do, one contract per role (core.ports, core.auth.KeyStore,
core.rules.RuleStore); each backend's test class inherits them all and provides a `store` fixture."""

from __future__ import annotations

from core.auth import KeyStore
from core.digest import Digest
from core.mediatypes import OCI_INDEX, OCI_MANIFEST
from core.ports import (
    BLOB,
    MANIFEST,
    Breakers,
    CacheMetadata,
    ContentEntry,
    ContentIndex,
    ContentRef,
    Counters,
    Leases,
    ManifestRecord,
    Orphan,
    TagEntry,
    TagRecord,
    TagStore,
    cursor_of,
)
from core.rules import RuleStore
from core.usage import RETENTION_HOURS, UsageKey, UsageTotals, hour_of

D1 = Digest.of(b"one")
D2 = Digest.of(b"two")
D3 = Digest.of(b"three")


def tag_record(digest: Digest = D1, checked_at: float = 100.0, pulled_at: float = 100.0) -> TagRecord:
    return TagRecord(ManifestRecord(digest, OCI_MANIFEST, 123), checked_at, pulled_at)


class TagStoreContract:
    """Tags per scope and repository."""

    def test_unknown_tags_are_none(self, store: TagStore):
        assert store.get_tag("s", "repo", "v1") is None
        assert store.list_tags("s", "repo") == []
        assert store.list_repositories() == []

    def test_tags_round_trip_and_are_replaced(self, store: TagStore):
        store.put_tag("s", "library/app", "v1", tag_record())
        assert store.get_tag("s", "library/app", "v1") == tag_record()
        store.put_tag("s", "library/app", "v1", tag_record(D2, 200.0, 150.0))
        assert store.get_tag("s", "library/app", "v1") == tag_record(D2, 200.0, 150.0)

    def test_tags_are_scoped(self, store: TagStore):
        store.put_tag("s", "repo", "v1", tag_record())
        assert store.get_tag("other", "repo", "v1") is None
        assert store.get_tag("s", "repo2", "v1") is None
        assert store.get_tag("s", "repo", "v2") is None

    def test_record_pull_only_moves_forward(self, store: TagStore):
        store.put_tag("s", "repo", "v1", tag_record(pulled_at=100.0))
        store.record_pull("s", "repo", "v1", 300.0)
        assert store.get_tag("s", "repo", "v1").pulled_at == 300.0
        store.record_pull("s", "repo", "v1", 200.0)
        assert store.get_tag("s", "repo", "v1").pulled_at == 300.0
        store.record_pull("s", "repo", "unknown", 300.0)
        assert store.get_tag("s", "repo", "unknown") is None

    def test_list_tags_and_repositories(self, store: CacheMetadata):  # repositories known by manifests count too
        for tag in ("b", "a", "c"):
            store.put_tag("s", "repo", tag, tag_record())
        store.put_tag("t", "repo", "x", tag_record())
        store.put_manifest("s", "only-digests", ManifestRecord(D1, OCI_MANIFEST, 1))
        assert sorted(store.list_tags("s", "repo")) == ["a", "b", "c"]
        assert sorted(store.list_repositories()) == [("s", "only-digests"), ("s", "repo"), ("t", "repo")]

    def test_stale_tags_are_those_unconfirmed_and_recently_pulled_oldest_first(self, store: TagStore):
        store.put_tag("s", "repo", "old", tag_record(checked_at=100.0, pulled_at=900.0))
        store.put_tag("s", "repo", "older", tag_record(checked_at=50.0, pulled_at=950.0))
        store.put_tag("s", "other/repo", "fresh", tag_record(checked_at=500.0, pulled_at=900.0))
        store.put_tag("s", "repo", "forgotten", tag_record(checked_at=10.0, pulled_at=10.0))
        store.put_tag("t", "repo", "other-scope", tag_record(checked_at=10.0, pulled_at=900.0))
        assert store.stale_tags("s", checked_before=200.0, pulled_after=800.0, limit=10) == [
            ("repo", "older"),
            ("repo", "old"),
        ]
        assert store.stale_tags("s", checked_before=200.0, pulled_after=800.0, limit=1) == [("repo", "older")]
        store.record_pull("s", "repo", "forgotten", 990.0)  # pulled again: back in the window, the oldest check
        assert store.stale_tags("s", checked_before=200.0, pulled_after=800.0, limit=10) == [
            ("repo", "forgotten"),
            ("repo", "older"),
            ("repo", "old"),
        ]
        assert store.stale_tags("t", checked_before=200.0, pulled_after=800.0, limit=10) == [("repo", "other-scope")]


class ContentIndexContract:
    """Manifest and blob records per scope and repository."""

    def test_unknown_content_is_none(self, store: ContentIndex):
        assert store.get_manifest("s", "repo", D1) is None
        assert store.get_blob("s", "repo", D1) is None

    def test_manifests_round_trip_per_scope_and_repository(self, store: ContentIndex):
        record = ManifestRecord(D1, OCI_INDEX, 4567)
        store.put_manifest("s", "repo", record)
        assert store.get_manifest("s", "repo", D1) == record
        assert store.get_manifest("other", "repo", D1) is None
        assert store.get_manifest("s", "repo/sub", D1) is None
        assert store.get_manifest("s", "rep", D1) is None

    def test_blobs_round_trip_per_scope_and_repository(self, store: ContentIndex):
        store.put_blob("s", "repo", D1, 99)
        assert store.get_blob("s", "repo", D1) == 99
        assert store.get_blob("other", "repo", D1) is None
        assert store.get_blob("s", "other/repo", D1) is None
        store.put_blob("s", "repo", D1, 99)
        store.put_blob("s", "other/repo", D1, 99)
        assert store.get_blob("s", "repo", D1) == 99
        assert store.get_blob("s", "other/repo", D1) == 99


class LeasesContract:
    """Expiring leases."""

    def test_lease_excludes_other_owners_until_it_expires(self, store: Leases, clock):
        assert store.acquire_lease("fill/x", "a", 30)
        assert not store.acquire_lease("fill/x", "b", 30)
        assert store.acquire_lease("fill/y", "b", 30)  # another key
        clock.advance(29)
        assert not store.acquire_lease("fill/x", "b", 30)
        clock.advance(2)
        assert store.acquire_lease("fill/x", "b", 30)  # a died: b takes over
        assert not store.acquire_lease("fill/x", "a", 30)

    def test_lease_renewal_and_release(self, store: Leases, clock):
        assert store.acquire_lease("fill/x", "a", 10)
        clock.advance(8)
        assert store.acquire_lease("fill/x", "a", 10)  # renewed to t+18
        clock.advance(8)
        assert not store.acquire_lease("fill/x", "b", 10)
        store.release_lease("fill/x", "b")  # not b's to release
        assert not store.acquire_lease("fill/x", "b", 10)
        store.release_lease("fill/x", "a")
        assert store.acquire_lease("fill/x", "b", 10)


class BreakersContract:
    """Upstream breakers."""

    def test_breaker_counts_failures_in_a_row_within_the_window(self, store: Breakers, clock):
        assert store.get_breaker("https://up.example") is None
        assert store.count_breaker_failure("https://up.example", "UNAVAILABLE", "refused", 60) == 1
        clock.advance(30)
        assert store.count_breaker_failure("https://up.example", "UNAVAILABLE", "reset", 60) == 2
        state = store.get_breaker("https://up.example")
        assert (state.failures, state.trips, state.code, state.reason) == (2, 0, "UNAVAILABLE", "reset")
        assert store.get_breaker("https://other.example") is None
        clock.advance(31)  # the window started with the first failure: the count starts over
        assert store.get_breaker("https://up.example").failures == 0
        assert store.count_breaker_failure("https://up.example", "UNAVAILABLE", "refused", 60) == 1

    def test_breaker_opens_trips_and_closes(self, store: Breakers, clock):
        store.count_breaker_failure("https://up.example", "UNAVAILABLE", "refused", 60)
        store.open_breaker("https://up.example", clock() + 30, "TOOMANYREQUESTS", "slow down")
        state = store.get_breaker("https://up.example")
        assert (state.failures, state.open_until, state.trips) == (0, clock() + 30, 1)
        assert (state.code, state.reason) == ("TOOMANYREQUESTS", "slow down")
        store.open_breaker("https://up.example", clock() + 60, "UNAVAILABLE", "still down")
        assert store.get_breaker("https://up.example").trips == 2
        store.open_breaker("https://new.example", clock() + 10, "UNAVAILABLE", "down")  # opened with no count
        assert store.get_breaker("https://new.example").trips == 1
        store.close_breaker("https://up.example")
        store.close_breaker("https://never.example")
        assert store.get_breaker("https://up.example") is None


class CountersContract:
    """Expiring counters."""

    def test_counters_count_until_they_expire(self, store: Counters, clock):
        assert store.get_counter("misses/ci/1") == 0
        assert [store.increment_counter("misses/ci/1", clock() + 60) for _ in range(3)] == [1, 2, 3]
        assert store.increment_counter("misses/other/1", clock() + 60) == 1
        assert store.get_counter("misses/ci/1") == 3
        clock.advance(60)
        assert store.get_counter("misses/ci/1") == 0
        assert store.increment_counter("misses/ci/1", clock() + 10) == 1  # starts over, with its new expiry
        clock.advance(9)
        assert store.get_counter("misses/ci/1") == 1
        clock.advance(1)
        assert store.get_counter("misses/ci/1") == 0


class KeyStoreContract:
    """Pull keys."""

    def test_pull_keys_round_trip_and_never_hold_the_secret(self, store: KeyStore):
        from core.auth import PullKey, hash_secret

        assert store.get_key("ci") is None and store.list_keys() == []
        key = PullKey("ci", ("docker-hub", "ghcr/org"), hash_secret("the-secret"), 100.0, expires_at=200.0)
        store.put_key(key)
        store.put_key(PullKey("admin", ("",), hash_secret("other"), 50.0))
        assert store.get_key("ci") == key
        assert [k.name for k in store.list_keys()] == ["admin", "ci"]
        assert "the-secret" not in repr(store.list_keys())
        from dataclasses import replace

        store.put_key(replace(key, revoked=True))
        assert store.get_key("ci").revoked


class RuleStoreContract:
    """Stored rules."""

    def test_rules_round_trip(self, store: RuleStore):
        from core.rules import Rule

        assert store.list_rules() == []
        hub = Rule("hub", "https://registry-1.docker.io", 600, library_namespace=True, max_stale_seconds=3600,
                   prefetch_platforms=("linux/amd64", "linux/arm64/v8"), credentials="env:HUB",
                   allow=("library/*",), deny=("library/bad",), allowed_tags="v[0-9.]+")  # fmt: skip
        root = Rule("", "https://mirror.example", 0)
        store.put_rule(hub)
        store.put_rule(root)
        assert sorted(store.list_rules(), key=lambda rule: rule.prefix) == [root, hub]
        store.put_rule(Rule("hub", "https://other.example"))
        store.delete_rule("")
        store.delete_rule("never-existed")
        assert store.list_rules() == [Rule("hub", "https://other.example")]


class LifecycleContract:
    """What the lifecycle sweep reads and forgets: a repository at a time, orphans and repositories by page."""

    def test_a_repositorys_tags_and_content_with_their_times(self, store: CacheMetadata, clock):
        store.put_tag("s", "app", "v1", tag_record(D1, checked_at=10.0, pulled_at=20.0))
        store.put_manifest("s", "app", ManifestRecord(D1, OCI_MANIFEST, 5), pulled=True)
        clock.advance(5)
        store.put_manifest("s", "app", ManifestRecord(D2, OCI_INDEX, 6))
        store.put_blob("s", "app", D3, 7)
        store.put_blob("s", "other", D3, 7)
        assert store.repository_tags("s", "app") == [TagEntry("v1", D1, 10.0, 20.0)]
        content = sorted(store.repository_content("s", "app"), key=lambda entry: (entry.kind, str(entry.digest)))
        assert content == sorted([
            ContentEntry(MANIFEST, D1, 5, clock() - 5, clock() - 5), ContentEntry(MANIFEST, D2, 6, clock(), None),
            ContentEntry(BLOB, D3, 7, clock()),
        ], key=lambda entry: (entry.kind, str(entry.digest)))  # fmt: skip
        assert store.repository_content("t", "app") == [] and store.repository_tags("s", "nope") == []

    def test_a_manifest_pull_by_digest_is_recorded_and_only_moves_forward(self, store: CacheMetadata, clock):
        store.put_manifest("s", "app", ManifestRecord(D1, OCI_MANIFEST, 5))
        assert store.get_manifest("s", "app", D1).pulled_at is None
        store.record_manifest_pull("s", "app", D1, 300.0)
        store.record_manifest_pull("s", "app", D1, 200.0)
        assert store.get_manifest("s", "app", D1).pulled_at == 300.0
        store.put_manifest("s", "app", ManifestRecord(D1, OCI_MANIFEST, 5))  # linked again: its pull time stays
        assert store.get_manifest("s", "app", D1).pulled_at == 300.0

    def test_forgetting_spares_what_was_pulled_or_linked_since(self, store: CacheMetadata, clock):
        store.put_tag("s", "app", "old", tag_record(D1, checked_at=10.0, pulled_at=20.0))
        store.put_tag("s", "app", "pulled", tag_record(D1, checked_at=10.0, pulled_at=500.0))
        assert store.forget_tag("s", "app", "old", pulled_before=100.0, checked_before=100.0)
        assert not store.forget_tag("s", "app", "pulled", pulled_before=100.0, checked_before=100.0)
        assert not store.forget_tag("s", "app", "gone", pulled_before=100.0, checked_before=100.0)
        assert [tag.tag for tag in store.repository_tags("s", "app")] == ["pulled"]
        store.put_blob("s", "app", D3, 7)
        store.put_manifest("s", "app", ManifestRecord(D2, OCI_MANIFEST, 5), pulled=True)
        blob, manifest = ContentEntry(BLOB, D3, 7, clock()), ContentEntry(MANIFEST, D2, 5, clock(), clock())
        assert not store.forget_content("s", "app", blob, pulled_before=clock() + 1, linked_before=clock())
        assert not store.forget_content("s", "app", manifest, pulled_before=clock(), linked_before=clock() + 1)
        assert store.forget_content("s", "app", blob, pulled_before=clock() + 1, linked_before=clock() + 1)
        assert store.forget_content("s", "app", manifest, pulled_before=clock() + 1, linked_before=clock() + 1)
        assert store.get_blob("s", "app", D3) is None and store.get_manifest("s", "app", D2) is None

    def test_references_follow_links_and_forgetting(self, store: CacheMetadata, clock):
        assert store.references(D3) == []
        store.put_blob("s", "app", D3, 7)
        store.put_blob("t", "other", D3, 7)
        store.put_manifest("s", "app", ManifestRecord(D3, OCI_MANIFEST, 7))
        assert sorted(store.references(D3), key=str) == sorted(
            [ContentRef("s", "app", BLOB), ContentRef("t", "other", BLOB), ContentRef("s", "app", MANIFEST)], key=str
        )
        later = clock() + 1
        for scope, repository, kind in (("s", "app", BLOB), ("t", "other", BLOB), ("s", "app", MANIFEST)):
            store.forget_content(scope, repository, ContentEntry(kind, D3, 7, 0.0), pulled_before=later,
                                 linked_before=later)  # fmt: skip
        assert store.references(D3) == []

    def test_referenced_answers_for_many_digests_at_once(self, store: CacheMetadata, clock):
        many = [Digest.of(str(n).encode()) for n in range(450)]  # more than one batch of every backend
        for digest in many[::7]:
            store.put_blob("s", "app", digest, 1)
        store.put_manifest("t", "other", ManifestRecord(many[1], OCI_MANIFEST, 1))
        assert store.referenced(many) == set(many[::7]) | {many[1]}
        later = clock() + 1
        store.forget_content("s", "app", ContentEntry(BLOB, many[0], 1, 0.0), pulled_before=later, linked_before=later)
        assert many[0] not in store.referenced(many) and store.referenced([]) == set()

    def test_repositories_come_in_pages_after_a_cursor(self, store: CacheMetadata):
        for repository in ("a", "b/c", "d", "e"):
            store.put_tag("s", repository, "v1", tag_record())
        store.put_manifest("t", "only-manifests", ManifestRecord(D1, OCI_MANIFEST, 1))
        first = store.repositories(None, 2)
        assert first == [("s", "a"), ("s", "b/c")]
        rest = store.repositories(cursor_of(*first[-1]), 10)
        assert rest == [("s", "d"), ("s", "e"), ("t", "only-manifests")]
        assert store.repositories(cursor_of(*rest[-1]), 10) == []

    def test_orphans_keep_their_first_time_and_come_in_pages(self, store: CacheMetadata):
        store.add_orphan(Orphan(D1, 10, 100.0))
        store.add_orphan(Orphan(D1, 10, 200.0))  # known already
        store.add_orphan(Orphan(D2, 20, 150.0))
        store.add_orphan(Orphan(D3, 30, 150.0))
        everything = sorted([Orphan(D1, 10, 100.0), Orphan(D2, 20, 150.0), Orphan(D3, 30, 150.0)], key=_by_digest)
        first = store.orphans(None, 2)
        assert first == everything[:2]
        assert store.orphans(first[-1].digest, 10) == everything[2:]
        store.drop_orphans([D1, D3])
        assert store.orphans(None, 10) == [Orphan(D2, 20, 150.0)]

    def test_cursors_are_kept_until_cleared(self, store: CacheMetadata):
        assert store.get_cursor("sweep") is None
        store.put_cursor("sweep", "s#app")
        assert store.get_cursor("sweep") == "s#app"
        store.put_cursor("sweep", None)
        assert store.get_cursor("sweep") is None


def _by_digest(orphan: Orphan) -> str:
    return str(orphan.digest)


class UsageTotalsContract:
    """core.usage.UsageTotals: hourly totals, added to, read from an hour on, a week kept."""

    def test_totals_add_up_per_hour_rule_repository_and_name(self, store: UsageTotals, clock):
        now = hour_of(clock())
        store.add_usage({UsageKey(now, "up", "", "TagHit"): 3, UsageKey(now, "up", "library/a", "ImagePull"): 1})
        store.add_usage({UsageKey(now, "up", "", "TagHit"): 2.5, UsageKey(now - 2, "up", "", "TagHit"): 7,
                         UsageKey(now, "other", "", "TagHit"): 1})  # fmt: skip
        assert sorted(store.usage(now - 1), key=str) == sorted(
            [(UsageKey(now, "up", "", "TagHit"), 5.5), (UsageKey(now, "up", "library/a", "ImagePull"), 1),
             (UsageKey(now, "other", "", "TagHit"), 1)], key=str)  # fmt: skip
        assert (UsageKey(now - 2, "up", "", "TagHit"), 7) in store.usage(now - 2)

    def test_totals_older_than_the_retention_go(self, store: UsageTotals, clock):
        old = hour_of(clock()) - RETENTION_HOURS - 1
        store.add_usage({UsageKey(old, "up", "", "TagHit"): 1})
        store.add_usage({UsageKey(hour_of(clock()), "up", "", "TagHit"): 1})
        assert [key.hour for key, _ in store.usage(old)] == [hour_of(clock())]


METADATA_CONTRACTS = (TagStoreContract, ContentIndexContract, LeasesContract, BreakersContract, CountersContract,
                      KeyStoreContract, RuleStoreContract, LifecycleContract, UsageTotalsContract)  # fmt: skip
