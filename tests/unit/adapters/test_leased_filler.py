"""The serverless filler's decisions: copy now, hand over to the fill function, or wait for another filler."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.digest import Digest
from core.errors import Unavailable
from core.filling import store_bytes
from core.ports import FillJob, LocalBlob
from pullthrough_adapters.aws.filler import LeasedFiller, complete_hand_over
from pullthrough_adapters.local.blob_store import FileBlobStore
from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
from tests.fakes import FakeUpstream

SMALL = b"s" * 1000
BIG = b"b" * 100_000


class RecordingDispatcher:
    def __init__(self) -> None:
        self.jobs: list[tuple[FillJob, str]] = []

    def dispatch(self, job: FillJob, lease_owner: str) -> None:
        self.jobs.append((job, lease_owner))


@pytest.fixture
def parts(tmp_path: Path, clock):
    blobs = FileBlobStore(tmp_path)
    metadata = SqliteMetadataStore(tmp_path / "metadata.sqlite3", clock=clock)
    dispatcher = RecordingDispatcher()
    filler = LeasedFiller(blobs, metadata, dispatcher, sync_max_bytes=10_000, wait_seconds=0.2, poll_seconds=0.05)
    upstream = FakeUpstream()
    return filler, metadata, dispatcher, upstream, blobs


def fill(filler: LeasedFiller, metadata: SqliteMetadataStore, upstream: FakeUpstream, data: bytes):
    digest = upstream.add_blob("repo", data)
    job = FillJob("up/repo", "up", "repo", digest)
    return job, filler.fill(
        job, lambda: upstream.open_blob("repo", digest), lambda size: metadata.put_blob("up", "repo", digest, size)
    )


def test_small_blob_is_copied_by_the_request_and_the_lease_released(parts):
    filler, metadata, dispatcher, upstream, _ = parts
    job, body = fill(filler, metadata, upstream, SMALL)
    assert isinstance(body, LocalBlob) and Path(body.path).read_bytes() == SMALL
    assert metadata.get_blob("up", "repo", job.digest) == len(SMALL)
    assert dispatcher.jobs == []
    assert metadata.acquire_lease(job.lease_key, "someone-else", 60)


def test_a_fill_that_finds_the_lease_free_but_the_blob_landed_fetches_nothing(parts):
    """A request that missed just before another's fill recorded the blob and let go of the lease: the lease is
    free again, and the blob is there (CI saw the upstream asked twice this way)."""
    filler, metadata, dispatcher, upstream, _ = parts
    job, _ = fill(filler, metadata, upstream, SMALL)
    upstream.calls.clear()
    _, again = fill(filler, metadata, upstream, SMALL)
    assert isinstance(again, LocalBlob) and Path(again.path).read_bytes() == SMALL
    assert upstream.calls == {} and dispatcher.jobs == []
    assert metadata.acquire_lease(job.lease_key, "someone-else", 60)  # and it let go of the lease


def test_big_blob_is_handed_over_with_the_lease_and_waited_for(parts):
    filler, metadata, dispatcher, upstream, blobs = parts
    with pytest.raises(Unavailable) as raised:
        fill(filler, metadata, upstream, BIG)
    assert raised.value.retry_after > 0
    [(job, owner)] = dispatcher.jobs
    assert job.digest == Digest.of(BIG) and not blobs.exists(job.digest)
    assert not metadata.acquire_lease(job.lease_key, "someone-else", 60)  # still held...
    assert metadata.acquire_lease(job.lease_key, owner, 900)  # ...for the fill function to renew


def test_a_request_finding_the_lease_taken_waits_then_answers_retry(parts):
    filler, metadata, dispatcher, upstream, _ = parts
    digest = upstream.add_blob("repo", SMALL)
    job = FillJob("up/repo", "up", "repo", digest)
    metadata.acquire_lease(job.lease_key, "another-instance", 60)
    with pytest.raises(Unavailable):
        filler.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    assert upstream.calls == {}  # no second upstream fetch
    assert dispatcher.jobs == []


def test_a_waiting_request_gets_the_blob_once_the_other_filler_commits(parts):
    _, metadata, _, upstream, blobs = parts
    digest = upstream.add_blob("repo", SMALL)
    job = FillJob("up/repo", "up", "repo", digest)
    metadata.acquire_lease(job.lease_key, "another-instance", 60)

    def other_instance_commits(_: float) -> None:
        store_bytes(blobs, digest, SMALL)
        metadata.put_blob("up", "repo", digest, len(SMALL))

    waiting = LeasedFiller(
        blobs, metadata, RecordingDispatcher(), sync_max_bytes=10_000, poll_seconds=0.01, sleep=other_instance_commits
    )
    body = waiting.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    assert isinstance(body, LocalBlob) and upstream.calls == {}


def test_a_handed_over_blob_is_redirected_to_once_the_fill_function_lands_it(parts, tmp_path):
    _, metadata, _, upstream, blobs = parts
    digest = upstream.add_blob("repo", BIG)

    class FillingDispatcher:
        def dispatch(self, job: FillJob, lease_owner: str) -> None:  # what the fill function does, inline
            assert metadata.acquire_lease(job.lease_key, lease_owner, 900)
            store_bytes(blobs, job.digest, BIG)
            metadata.put_blob(job.scope, job.repository, job.digest, len(BIG))
            metadata.release_lease(job.lease_key, lease_owner)

    filler = LeasedFiller(blobs, metadata, FillingDispatcher(), sync_max_bytes=10_000, poll_seconds=0.01)
    job = FillJob("up/repo", "up", "repo", digest)
    body = filler.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    assert isinstance(body, LocalBlob) and Path(body.path).read_bytes() == BIG


def test_a_failed_hand_over_releases_the_lease_at_once(tmp_path: Path, clock):
    class FailingDispatcher:
        def dispatch(self, job: FillJob, lease_owner: str) -> None:
            raise Unavailable("could not start the fill function")

    blobs = FileBlobStore(tmp_path)
    metadata = SqliteMetadataStore(tmp_path / "metadata.sqlite3", clock=clock)
    filler = LeasedFiller(blobs, metadata, FailingDispatcher(), sync_max_bytes=10_000, poll_seconds=0.01)
    upstream = FakeUpstream()
    with pytest.raises(Unavailable, match="could not start"):
        fill(filler, metadata, upstream, BIG)
    job = FillJob("up/repo", "up", "repo", Digest.of(BIG))
    assert metadata.acquire_lease(job.lease_key, "the-next-request", 60)  # not stuck for the lease's lifetime


def test_a_blob_of_unknown_size_is_handed_over(parts):
    filler, metadata, dispatcher, upstream, _ = parts
    upstream.send_sizes = False
    with pytest.raises(Unavailable):
        fill(filler, metadata, upstream, SMALL)
    assert [job.digest for job, _ in dispatcher.jobs] == [Digest.of(SMALL)]


def test_a_handed_over_fill_copies_under_the_lease_and_skips_when_another_holds_it(cache, upstream):
    """The fill function's side of the hand-over, over the cache's fill order for the blob."""
    digest = upstream.add_blob("library/app", b"content")
    blobs, leases = cache._blobs, cache._metadata
    order = cache.fill_order("up/library/app", str(digest))
    assert complete_hand_over(order, blobs, leases, "a") == len(b"content")
    assert isinstance(cache.lookup_blob("up/library/app", str(digest), head=False), LocalBlob)
    assert complete_hand_over(order, blobs, leases, "b") == len(b"content")  # landed already: a retried invocation

    other = upstream.add_blob("library/app", b"other")
    leases.acquire_lease(f"fill/up/library/app/{other}", "somebody", 60)
    assert complete_hand_over(cache.fill_order("up/library/app", str(other)), blobs, leases, "a") is None
    assert upstream.calls["open_blob"] == 1
