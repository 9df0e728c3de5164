"""The local filler across server processes: one downloads (it holds the lease), the others follow its temp file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from adapters.local.blob_store import FileBlobStore
from adapters.local.filler import TeeFiller
from adapters.local.metadata_store import SqliteMetadataStore
from core.errors import DigestMismatch, Unavailable
from core.ports import FillJob, StreamedBlob
from tests.fakes import FakeUpstream

DATA = bytes(range(256)) * 4000  # ~1 MB in 16 chunks


def process(root: Path) -> tuple[TeeFiller, SqliteMetadataStore]:
    """What one server process has: its own store objects over the shared data directory."""
    metadata = SqliteMetadataStore(root / "metadata.sqlite3")
    return TeeFiller(FileBlobStore(root), metadata), metadata


def read_all(body) -> bytes:
    return b"".join(body.chunks(0, body.size))


@pytest.fixture
def upstream() -> FakeUpstream:
    upstream = FakeUpstream()
    upstream.chunk_delay = 0.02  # slow enough that the second process arrives mid-download
    return upstream


def test_a_second_process_follows_the_download_of_the_first(tmp_path: Path, upstream: FakeUpstream):
    digest = upstream.add_blob("repo", DATA)
    job = FillJob("up/repo", "up", digest)
    (first, first_metadata), (second, _) = process(tmp_path), process(tmp_path)
    holder = first.fill(
        job, lambda: upstream.open_blob("repo", digest), lambda size: first_metadata.put_blob("up", digest, size)
    )
    follower = second.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    assert isinstance(holder, StreamedBlob) and isinstance(follower, StreamedBlob)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda body=body: results.append(read_all(body))) for body in (holder, follower)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [DATA, DATA]
    assert upstream.calls == {"open_blob": 1}
    assert b"".join(follower.chunks(1000, 500)) == DATA[1000:1500]


def test_followers_see_the_holders_failure_and_nothing_is_kept(tmp_path: Path, upstream: FakeUpstream):
    digest = upstream.add_blob("repo", DATA)
    upstream.corrupt_blobs = True
    job = FillJob("up/repo", "up", digest)
    (first, _), (second, _) = process(tmp_path), process(tmp_path)
    holder = first.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    follower = second.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    with pytest.raises(Unavailable):
        read_all(follower)
    with pytest.raises(DigestMismatch):
        read_all(holder)
    assert not FileBlobStore(tmp_path).exists(digest)
    assert sorted(path.name for path in (tmp_path / "tmp").iterdir()) == []


def test_a_download_that_lost_its_lease_stops_and_keeps_nothing(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
):
    import adapters.local.filler as filler_module

    monkeypatch.setattr(filler_module, "RENEW_EVERY_SECONDS", 0.0)  # renew on every chunk
    digest = upstream.add_blob("repo", DATA)
    job = FillJob("up/repo", "up", digest)
    filler, _ = process(tmp_path)
    body = filler.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    assert isinstance(body, StreamedBlob)
    # seen from two minutes later, the lease has lapsed (a stall), and another process takes it over
    later = SqliteMetadataStore(tmp_path / "metadata.sqlite3", clock=lambda: time.time() + 120)
    assert later.acquire_lease(job.lease_key, "another-process", 600)
    with pytest.raises(Unavailable, match="lost its lease"):
        read_all(body)
    assert not FileBlobStore(tmp_path).exists(digest)
