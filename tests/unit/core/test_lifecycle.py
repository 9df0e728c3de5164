"""The lifecycle over the local backend and a fake upstream: what expires, what stays, what is deleted and when."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cache import PullThroughCache
from core.digest import Digest
from core.lifecycle import Lifecycler
from core.mediatypes import OCI_MANIFEST, Accept
from core.ports import ImageExpired
from core.rules import Rule, RuleSet
from tests.conftest import Clock
from tests.fakes import FakeUpstream

ANY = Accept([])
DAY = 86400.0
GRACE = 600.0
BASE = b"base layer " * 1000


class Recorded:
    def __init__(self) -> None:
        self.events: list[ImageExpired] = []

    def publish(self, event) -> None:  # type: ignore[no-untyped-def]
        self.events.append(event)


@pytest.fixture
def expiring(cache: PullThroughCache) -> PullThroughCache:
    cache.rule_source = RuleSet([
        Rule("up", "http://upstream.invalid", tag_ttl_seconds=int(DAY), expire_unpulled=int(7 * DAY),
             keep=("library/pinned", "library/app:v1.*", r"re:library/rx:stable-\d+")),
        Rule("forever", "http://forever.invalid"),
    ])  # fmt: skip
    return cache


@pytest.fixture
def events() -> Recorded:
    return Recorded()


@pytest.fixture
def lifecycler(expiring: PullThroughCache, clock: Clock, events: Recorded) -> Lifecycler:
    return Lifecycler(expiring.rule_source, expiring._metadata, expiring._blobs, grace_seconds=GRACE, events=events,
                      clock=clock)  # fmt: skip


def add_image(upstream: FakeUpstream, repository: str, tag: str, own: bytes) -> tuple[Digest, list[Digest]]:
    """An image of two layers, the first (BASE) shared with every other image made here."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "own": str(Digest.of(own))}).encode()
    blobs = [upstream.add_blob(repository, data) for data in (config, BASE, own)]
    manifest = upstream.add_manifest(repository, {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(blobs[0]),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(digest), "size": len(data)}
                   for digest, data in ((blobs[1], BASE), (blobs[2], own))],
    }, tag)  # fmt: skip
    return manifest, blobs


def pull(cache: PullThroughCache, name: str, tag: str, blobs: list[Digest]) -> None:
    """As a client pulls: the manifest by tag, then every blob, read to the end."""
    cache.manifest(name, tag, ANY, with_body=True)
    for digest in blobs:
        body = cache.blob(name, str(digest), head=False)
        if hasattr(body, "chunks"):
            b"".join(body.chunks(0, body.size))
            body.stored()


def stored(cache: PullThroughCache, digest: Digest) -> bool:
    return cache._blobs.exists(digest)


def test_an_image_nobody_pulled_expires_its_shared_layer_stays_its_bytes_go_after_the_grace(
    expiring, lifecycler, upstream, clock, events
):
    kept_manifest, kept_blobs = add_image(upstream, "library/kept", "v1", b"kept's own")
    gone_manifest, gone_blobs = add_image(upstream, "library/gone", "v1", b"gone's own")
    pull(expiring, "up/library/kept", "v1", kept_blobs)
    pull(expiring, "up/library/gone", "v1", gone_blobs)
    clock.advance(8 * DAY)
    pull(expiring, "up/library/kept", "v1", kept_blobs)  # pulled again: within its 7 days

    report = lifecycler.sweep()
    assert (report.tags_forgotten, report.manifests_forgotten, report.blobs_forgotten) == (1, 1, 3)
    assert events.events == [ImageExpired("up/library/gone", str(gone_manifest), "v1")]
    assert report.orphaned == 3  # gone's manifest, config and own layer; the base layer is kept's too
    assert expiring._metadata.get_tag("up", "library/gone", "v1") is None
    assert all(stored(expiring, digest) for digest in gone_blobs)  # not before the grace period
    clock.advance(GRACE + 1)
    assert lifecycler.delete_orphans().deleted == 3
    assert not stored(expiring, gone_manifest) and not stored(expiring, gone_blobs[2])
    assert stored(expiring, gone_blobs[1]) and stored(expiring, kept_manifest)  # the shared base layer, the live image
    upstream.calls.clear()
    pull(expiring, "up/library/kept", "v1", kept_blobs)
    assert upstream.calls == {}  # the live image: nothing from the upstream
    pull(expiring, "up/library/gone", "v1", gone_blobs)  # the expired one: filled again, correctly
    assert upstream.calls["get_manifest"] == 1 and stored(expiring, gone_blobs[2])


def test_an_index_pulled_by_tag_keeps_every_child(expiring, lifecycler, upstream, clock):
    index, children = upstream.add_index("library/multi", "v1")
    expiring.manifest("up/library/multi", "v1", ANY, with_body=True)
    for child in children.values():  # a client of each platform fetches its child by digest
        expiring.manifest("up/library/multi", str(child), ANY, with_body=True)
    clock.advance(8 * DAY)
    expiring.manifest("up/library/multi", "v1", ANY, with_body=False)  # only the index, by tag, is pulled
    report = lifecycler.sweep()
    assert (report.tags_forgotten, report.manifests_forgotten) == (0, 0)
    assert expiring.lookup_manifest("up/library/multi", str(index), ANY, with_body=True) is not None
    for child in children.values():
        assert expiring.lookup_manifest("up/library/multi", str(child), ANY, with_body=True) is not None


def test_pinned_images_and_rules_without_expiry_never_expire(expiring, lifecycler, upstream, clock):
    for repository, tag in (("library/pinned", "old"), ("library/app", "v1.2"), ("library/rx", "stable-3")):
        upstream.add_image(repository, tag)
        expiring.manifest(f"up/{repository}", tag, ANY, with_body=False)
    upstream.add_image("library/app", "latest")
    expiring.manifest("up/library/app", "latest", ANY, with_body=False)
    upstream.add_image("library/forever", "v1")
    expiring.manifest("forever/library/forever", "v1", ANY, with_body=False)
    clock.advance(365 * DAY)
    report = lifecycler.sweep()
    assert [event.image_tag for event in report.expired] == ["latest"]  # only the unpinned one
    assert expiring._metadata.get_tag("forever", "library/forever", "v1") is not None


def test_a_manifest_pulled_by_digest_lives_by_its_own_pulls(expiring, lifecycler, upstream, clock, events):
    digest = upstream.add_image("library/bydigest", None)
    expiring.manifest("up/library/bydigest", str(digest), ANY, with_body=True)
    clock.advance(6 * DAY)
    expiring.manifest("up/library/bydigest", str(digest), ANY, with_body=True)  # a pull: its time moves on
    clock.advance(6 * DAY)
    assert lifecycler.sweep().manifests_forgotten == 0
    clock.advance(2 * DAY)
    assert lifecycler.sweep().manifests_forgotten == 1
    assert events.events == [ImageExpired("up/library/bydigest", str(digest), None)]


def test_the_referrers_of_live_digests_live_with_them(expiring, lifecycler, upstream, clock):
    subject = upstream.add_image("library/signed", "v1")
    signature = upstream.add_image("library/signed", f"sha256-{subject.encoded}.sig", layer=b"signature")
    referrers = upstream.add_image("library/signed", f"sha256-{subject.encoded}", layer=b"referrers index")
    orphan_signature = upstream.add_image("library/signed", f"sha256-{'e' * 64}.sig", layer=b"of nothing")
    for tag in ("v1", f"sha256-{subject.encoded}.sig", f"sha256-{subject.encoded}", f"sha256-{'e' * 64}.sig"):
        expiring.manifest("up/library/signed", tag, ANY, with_body=False)
    clock.advance(8 * DAY)
    expiring.manifest("up/library/signed", "v1", ANY, with_body=False)
    report = lifecycler.sweep()
    assert [event.image_digest for event in report.expired] == [str(orphan_signature)]
    for digest in (subject, signature, referrers):
        assert expiring._metadata.get_manifest("up", "library/signed", digest) is not None


def test_signatures_live_and_expire_with_their_image_not_with_referrers_requests(expiring, lifecycler, upstream,
                                                                                  clock):  # fmt: skip
    """A policy controller asks the referrers of every image it admits, long after anyone pulled some of them: its
    requests keep nothing alive; the image's own pulls keep its signatures, and their blobs."""
    kept = upstream.add_image("library/signed", "v1", layer=b"kept")
    gone = upstream.add_image("library/signed", "v2", layer=b"gone")
    signatures = {subject: upstream.add_referrer("library/signed", subject, "application/vnd.example.sig", b"%s" %
                                                 subject.encoded.encode()) for subject in (kept, gone)}  # fmt: skip
    for tag, subject in (("v1", kept), ("v2", gone)):
        expiring.manifest("up/library/signed", tag, ANY, with_body=True)
        expiring.referrers("up/library/signed", str(subject), None)
        expiring.manifest("up/library/signed", str(signatures[subject]), ANY, with_body=True)  # cosign verify
    clock.advance(8 * DAY)
    expiring.manifest("up/library/signed", "v1", ANY, with_body=False)
    for subject in (kept, gone):
        expiring.referrers("up/library/signed", str(subject), None)
    clock.advance(1)
    lifecycler.sweep()
    metadata = expiring._metadata
    assert metadata.get_manifest("up", "library/signed", signatures[kept]) is not None
    assert metadata.get_tag("up", "library/signed", f"sha256-{kept.encoded}") is not None
    assert metadata.get_manifest("up", "library/signed", signatures[gone]) is None
    assert metadata.get_tag("up", "library/signed", f"sha256-{gone.encoded}") is None


def test_a_dry_run_changes_nothing_and_says_the_same(expiring, upstream, clock, events):
    _, blobs = add_image(upstream, "library/gone", "v1", b"own")
    pull(expiring, "up/library/gone", "v1", blobs)
    clock.advance(8 * DAY)
    dry = Lifecycler(expiring.rule_source, expiring._metadata, expiring._blobs, grace_seconds=0, events=events,
                     clock=clock, dry_run=True).sweep()  # fmt: skip
    assert (dry.tags_forgotten, dry.manifests_forgotten, dry.blobs_forgotten, dry.orphaned) == (1, 1, 3, 4)
    assert events.events == [] and expiring._metadata.get_tag("up", "library/gone", "v1") is not None
    real = Lifecycler(expiring.rule_source, expiring._metadata, expiring._blobs, grace_seconds=0, events=events,
                      clock=clock).sweep()  # fmt: skip
    assert (real.tags_forgotten, real.manifests_forgotten, real.blobs_forgotten, real.orphaned) == (1, 1, 3, 4)
    assert real.deleted == 4 and all(not stored(expiring, digest) for digest in blobs)


def test_an_orphan_linked_again_before_the_grace_keeps_its_bytes(expiring, lifecycler, upstream, clock):
    _, blobs = add_image(upstream, "library/back", "v1", b"own")
    pull(expiring, "up/library/back", "v1", blobs)
    clock.advance(8 * DAY)
    assert lifecycler.sweep().orphaned == 4
    pull(expiring, "up/library/back", "v1", blobs)  # pulled again: manifest fetched, blobs linked after a HEAD
    assert upstream.calls["open_blob"] == 3  # the first pull only: the bytes were still there
    clock.advance(GRACE + 1)
    assert lifecycler.delete_orphans().deleted == 0
    assert all(stored(expiring, digest) for digest in blobs)


def test_the_size_cap_evicts_the_least_recently_pulled_never_the_pinned(expiring, upstream, clock, tmp_path: Path):
    images = {}
    for name in ("pinned", "oldest", "older", "newest"):
        images[name] = add_image(upstream, f"library/{name}", "v1", name.encode() * 20_000)
        pull(expiring, f"up/library/{name}", "v1", images[name][1])
        clock.advance(60)
    blobs = expiring._blobs
    usage = blobs.usage()
    lifecycler = Lifecycler(expiring.rule_source, expiring._metadata, blobs, grace_seconds=0, clock=clock)
    own = {name: len(name.encode() * 20_000) for name in images}
    cap = usage - own["oldest"] - own["older"]  # two images' own layers must go (with their configs, manifests)
    report = lifecycler.evict(usage, cap, low_water=1.0)
    assert [event.repository_name for event in report.expired] == ["up/library/oldest", "up/library/older"]
    assert blobs.usage() <= cap
    assert stored(expiring, images["pinned"][1][2]) and stored(expiring, images["newest"][1][2])
    assert stored(expiring, images["oldest"][1][1])  # the shared base layer
    assert lifecycler.evict(blobs.usage(), cap).expired == []  # under the cap: nothing to do


def test_the_background_janitor_works_one_process_at_a_time_and_sweeps_on_its_interval(
    expiring, lifecycler, upstream, clock
):
    from handlers.composition.janitor import Janitor

    _, blobs = add_image(upstream, "library/gone", "v1", b"gone's own")
    pull(expiring, "up/library/gone", "v1", blobs)
    clock.advance(8 * DAY)
    metadata = expiring._metadata
    ticks = iter([0.0, 0.0, 5.0, 11.0, 11.0])  # monotonic: both built at 0, then read by each round of `one`
    abandoned_removals: list[str] = []
    one, other = (Janitor(lifecycler, metadata, sweep_every=10, usage=lambda: 0, cap=None,
                          remove_abandoned=lambda: abandoned_removals.append("round") or 0,
                          clock=lambda: next(ticks)) for _ in range(2))  # fmt: skip
    assert metadata.acquire_lease("lifecycle", "someone else", 60)
    one.run_once()  # another process holds the lease: nothing happens
    assert abandoned_removals == []
    metadata.release_lease("lifecycle", "someone else")
    one.run_once()  # at 5 s: not yet time to sweep
    assert expiring._metadata.get_tag("up", "library/gone", "v1") is not None
    one.run_once()  # at 11 s: the sweep
    assert expiring._metadata.get_tag("up", "library/gone", "v1") is None
    assert abandoned_removals == ["round", "round"]  # partial downloads of killed processes: every round
    assert other.tick == 10


def test_a_last_pull_recorded_late_never_makes_an_image_expire_early(cache, upstream, clock):
    cache.rule_source = RuleSet([Rule("up", "http://upstream.invalid", tag_ttl_seconds=int(DAY), expire_unpulled=100)])
    lifecycler = Lifecycler(cache.rule_source, cache._metadata, cache._blobs, grace_seconds=GRACE, clock=clock)
    _, blobs = add_image(upstream, "library/app", "v1", b"app's own")
    pull(cache, "up/library/app", "v1", blobs)
    clock.advance(5)
    pull(cache, "up/library/app", "v1", blobs)  # within a tenth of expire_unpulled: not written
    assert cache._metadata.get_tag("up", "library/app", "v1").pulled_at == clock() - 5
    clock.advance(99)  # 99 s after the last pull
    assert lifecycler.sweep().tags_forgotten == 0
    clock.advance(8)  # 107 s after it: late by less than the tenth
    assert lifecycler.sweep().tags_forgotten == 1


def test_bytes_linked_again_within_the_grace_stay(expiring, lifecycler, upstream, clock):
    _, blobs = add_image(upstream, "library/gone", "v1", b"gone's own")
    pull(expiring, "up/library/gone", "v1", blobs)
    clock.advance(8 * DAY)
    assert lifecycler.sweep().orphaned == 4
    pull(expiring, "up/library/gone", "v1", blobs)  # pulled again within the grace: linked, bytes still there
    clock.advance(GRACE + 1)
    assert lifecycler.delete_orphans().deleted == 0
    assert all(stored(expiring, digest) for digest in blobs)
    assert expiring._metadata.orphans(None, 10) == []  # no longer orphans


def test_a_link_written_as_the_bytes_are_deleted_is_forgotten_so_the_next_pull_fills_again(
    expiring, lifecycler, upstream, clock
):
    _, blobs = add_image(upstream, "library/gone", "v1", b"gone's own")
    pull(expiring, "up/library/gone", "v1", blobs)
    clock.advance(8 * DAY)
    lifecycler.sweep()
    clock.advance(GRACE + 1)
    store = expiring._blobs
    delete = store.delete

    def linked_in_the_instant_before(digests):  # a pull of another repository links the layer meanwhile
        expiring._metadata.put_blob("up", "library/other", blobs[2], len(b"gone's own"))
        delete(digests)

    store.delete = linked_in_the_instant_before
    assert lifecycler.delete_orphans().deleted == 4
    assert expiring._metadata.get_blob("up", "library/other", blobs[2]) is None  # the late link, forgotten
    upstream.add_blob("library/other", b"gone's own")
    body = expiring.blob("up/library/other", str(blobs[2]), head=False)
    assert b"".join(body.chunks(0, body.size)) == b"gone's own"  # filled again from the upstream


def test_a_bounded_sweep_goes_on_where_the_last_run_stopped(expiring, lifecycler, upstream, clock):
    import time

    for n in range(5):
        _, blobs = add_image(upstream, f"library/app-{n}", "v1", f"own {n}".encode())
        pull(expiring, f"up/library/app-{n}", "v1", blobs)
    clock.advance(8 * DAY)
    out_of_time = lifecycler.sweep(stop_after=time.monotonic() - 1)  # no time left: starts nothing
    assert (out_of_time.repositories, out_of_time.finished) == (0, False)
    runs = [lifecycler.sweep(max_repositories=2) for _ in range(3)]
    assert [(run.repositories, run.tags_forgotten, run.finished) for run in runs] == [
        (2, 2, False), (2, 2, False), (1, 1, True)]  # fmt: skip
    assert expiring._metadata.get_cursor("sweep") is None  # a full pass done: the next one starts over


def test_bytes_deleted_while_another_repository_links_them_are_filled_again(expiring, upstream):
    _, blobs = add_image(upstream, "library/first", "v1", b"first's own")
    pull(expiring, "up/library/first", "v1", blobs)
    upstream.add_blob("library/second", b"first's own")
    metadata = expiring._metadata
    put_blob = metadata.put_blob
    links = []

    def deleted_meanwhile(scope, repository, digest, size):  # the sweep deletes the bytes as the link is written
        links.append(repository)
        if links == ["library/second"]:
            expiring._blobs.delete([digest])
        put_blob(scope, repository, digest, size)

    metadata.put_blob = deleted_meanwhile
    body = expiring.blob("up/library/second", str(blobs[2]), head=False)
    assert b"".join(body.chunks(0, body.size)) == b"first's own"  # a fill, not a pointer to nothing
    body.stored()
    assert stored(expiring, blobs[2])
