"""The local filler across server processes: one downloads (it holds the lease), the others follow its temp file."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from core.digest import Digest
from core.errors import BlobUnknown, Denied, DigestMismatch, Unavailable
from core.ports import FillJob, StreamedBlob
from pullthrough_adapters.local.blob_store import FileBlobStore
from pullthrough_adapters.local.filler import ABANDONED_AFTER_SECONDS, TeeFiller, remove_abandoned
from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
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
    job = FillJob("up/repo", "up", "repo", digest)
    (first, first_metadata), (second, _) = process(tmp_path), process(tmp_path)
    holder = first.fill(
        job,
        lambda: upstream.open_blob("repo", digest),
        lambda size: first_metadata.put_blob("up", "repo", digest, size),
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


def test_a_follower_waits_out_the_holders_recording_of_the_blob(tmp_path: Path, upstream: FakeUpstream):
    """The holder stores the blob, then records it: a follower that caught up meanwhile must not take the gap for a
    failure (CI saw a client's body cut one byte short this way)."""
    digest = upstream.add_blob("repo", DATA)
    job = FillJob("up/repo", "up", "repo", digest)
    (first, first_metadata), (second, _) = process(tmp_path), process(tmp_path)

    def record_slowly(size: int) -> None:
        time.sleep(0.5)
        first_metadata.put_blob("up", "repo", digest, size)

    holder = first.fill(job, lambda: upstream.open_blob("repo", digest), record_slowly)
    follower = second.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    assert isinstance(follower, StreamedBlob)
    assert read_all(follower) == DATA
    assert read_all(holder) == DATA


def test_a_follower_arriving_between_the_holders_rename_and_record_waits_for_the_record(
    tmp_path: Path, upstream: FakeUpstream
):
    """The temp file is gone (renamed into place) but the blob not yet recorded: that is a fill about to succeed,
    not a failure (CI saw a client cut off this way, with two server processes)."""
    digest = upstream.add_blob("repo", DATA)
    job = FillJob("up/repo", "up", "repo", digest)
    (first, first_metadata), (second, _) = process(tmp_path), process(tmp_path)
    renamed = threading.Event()

    def record_once_renamed(size: int) -> None:
        renamed.set()
        time.sleep(0.5)
        first_metadata.put_blob("up", "repo", digest, size)

    holder = first.fill(job, lambda: upstream.open_blob("repo", digest), record_once_renamed)
    assert renamed.wait(10)
    follower = second.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    assert isinstance(follower, StreamedBlob)
    assert read_all(follower) == DATA
    assert read_all(holder) == DATA


def test_followers_see_the_holders_failure_and_nothing_is_kept(tmp_path: Path, upstream: FakeUpstream):
    digest = upstream.add_blob("repo", DATA)
    upstream.corrupt_blobs = True
    job = FillJob("up/repo", "up", "repo", digest)
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
    import pullthrough_adapters.local.filler as filler_module

    monkeypatch.setattr(filler_module, "RENEW_EVERY_SECONDS", 0.0)  # renew on every chunk
    digest = upstream.add_blob("repo", DATA)
    job = FillJob("up/repo", "up", "repo", digest)
    filler, _ = process(tmp_path)
    body = filler.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    assert isinstance(body, StreamedBlob)
    # seen from two minutes later, the lease has lapsed (a stall), and another process takes it over
    later = SqliteMetadataStore(tmp_path / "metadata.sqlite3", clock=lambda: time.time() + 120)
    assert later.acquire_lease(job.lease_key, "another-process", 600)
    with pytest.raises(Unavailable, match="lost its lease"):
        read_all(body)
    assert not FileBlobStore(tmp_path).exists(digest)


def test_fills_of_two_rules_never_join(tmp_path: Path, upstream: FakeUpstream):
    """A client of one rule never gets a fill another rule runs: its bytes come from the other rule's upstream (and
    credentials). Here the public rule's upstream does not have the blob the private rule is filling."""
    digest = upstream.add_blob("repo", DATA)
    public_upstream = FakeUpstream()  # has no such blob
    filler, _ = process(tmp_path)
    private = filler.fill(FillJob("private/repo", "private", "repo", digest),
                          lambda: upstream.open_blob("repo", digest), lambda size: None)  # fmt: skip
    with pytest.raises(BlobUnknown):
        filler.fill(FillJob("public/repo", "public", "repo", digest),
                    lambda: public_upstream.open_blob("repo", digest), lambda size: None)  # fmt: skip
    assert read_all(private) == DATA  # and the private fill was not disturbed
    assert public_upstream.calls == {"open_blob": 1}


def test_fills_of_one_digest_for_two_rules_write_their_own_temp_files(tmp_path: Path, upstream: FakeUpstream):
    """Two processes filling one digest through two rules at once (the built-in docker-hub/ and root rules both
    point at Docker Hub): each writes a temp file of its own, and the blob stored hashes to its name."""
    digest = upstream.add_blob("repo", DATA)
    (first, _), (second, _) = process(tmp_path), process(tmp_path)
    bodies = [
        filler.fill(FillJob(f"{scope}/repo", scope, "repo", digest), lambda: upstream.open_blob("repo", digest),
                    lambda size: None)
        for filler, scope in ((first, "docker-hub"), (second, "(root)"))
    ]  # fmt: skip
    temp_files = {path.name for path in (tmp_path / "tmp").iterdir() if not path.name.startswith("fill-")}
    assert len(temp_files) == 2
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda body=body: results.append(read_all(body))) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [DATA, DATA]
    for body in bodies:
        body.stored()
    stored = FileBlobStore(tmp_path).path(digest).read_bytes()
    assert Digest.of(stored) == digest
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("offset, length", [(0, 1000), (5000, 20000), (len(DATA) - 10, 10)])
def test_a_range_of_a_fill_in_flight_never_comes_whole_before_the_blob_verifies(
    tmp_path: Path, upstream: FakeUpstream, offset: int, length: int
):
    digest = upstream.add_blob("repo", DATA)
    upstream.corrupt_blobs = True
    filler, _ = process(tmp_path)
    body = filler.fill(FillJob("up/repo", "up", "repo", digest), lambda: upstream.open_blob("repo", digest),
                       lambda size: None)  # fmt: skip
    received = bytearray()
    with pytest.raises(DigestMismatch):
        for chunk in body.chunks(offset, length):
            received += chunk
    assert len(received) < length


def test_a_body_longer_than_announced_or_the_rule_allows_is_cut_and_nothing_kept(tmp_path: Path, upstream):
    digest = upstream.add_blob("repo", DATA)
    upstream.send_sizes = False  # a chunked body: only the rule's maximum bounds it
    filler, _ = process(tmp_path)
    job = FillJob("up/repo", "up", "repo", digest, max_size=len(DATA) // 2)
    with pytest.raises(Denied, match="max_blob_bytes"):
        filler.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    upstream.send_sizes = True  # announced over the maximum: refused before a byte is written
    calls = upstream.calls["open_blob"]
    with pytest.raises(Denied, match="max_blob_bytes"):
        filler.fill(job, lambda: upstream.open_blob("repo", digest), lambda size: None)
    assert upstream.calls["open_blob"] == calls + 1
    declared = FillJob("up/repo", "up", "repo", digest, expected_size=len(DATA) - 1)  # the manifest says otherwise
    with pytest.raises(DigestMismatch, match="manifest declares"):
        filler.fill(declared, lambda: upstream.open_blob("repo", digest), lambda size: None)
    assert not FileBlobStore(tmp_path).exists(digest)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_fill_never_takes_the_disk_below_its_reserve(tmp_path: Path, upstream: FakeUpstream):
    digest = upstream.add_blob("repo", DATA)
    metadata = SqliteMetadataStore(tmp_path / "metadata.sqlite3")
    filler = TeeFiller(FileBlobStore(tmp_path), metadata, min_free_bytes=1 << 60)
    with pytest.raises(Unavailable, match="disk space"):
        filler.fill(FillJob("up/repo", "up", "repo", digest), lambda: upstream.open_blob("repo", digest),
                    lambda size: None)  # fmt: skip
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_fill_past_its_deadline_fails_and_keeps_nothing(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
):
    import pullthrough_adapters.local.filler as filler_module

    monkeypatch.setattr(filler_module, "FILL_BASE_SECONDS", 0.1)
    monkeypatch.setattr(filler_module, "FILL_SECONDS_PER_BYTE", 0.0)
    digest = upstream.add_blob("repo", DATA)
    filler, _ = process(tmp_path)
    body = filler.fill(FillJob("up/repo", "up", "repo", digest), lambda: upstream.open_blob("repo", digest),
                       lambda size: None)  # fmt: skip
    with pytest.raises(Unavailable, match="in time"):
        read_all(body)
    assert not FileBlobStore(tmp_path).exists(digest)


def test_clients_of_fills_read_smaller_chunks_as_they_add_up(tmp_path: Path):
    """Each client holds about two chunks: fifty clients of a fill must not hold a hundred MiB."""
    data = bytes(range(256)) * (4 * 4096)  # 4 MiB
    upstream = FakeUpstream()
    upstream.chunk_size, upstream.chunk_delay = 1 << 18, 0.01
    filler, metadata = process(tmp_path)

    def fill_and_read(repository: str, clients: int) -> list[int]:
        digest = upstream.add_blob(repository, data)
        body = filler.fill(FillJob(f"up/{repository}", "up", repository, digest),
                           lambda: upstream.open_blob(repository, digest),
                           lambda size: metadata.put_blob("up", repository, digest, size))  # fmt: skip
        assert isinstance(body, StreamedBlob)
        streams = [body.chunks(0, body.size) for _ in range(clients)]
        first = sum(len(next(stream)) for stream in streams)  # every client is reading now
        sizes = [len(next(stream)) for stream in streams]  # what each reads while all of them do
        rest = sum(len(chunk) for stream in streams for chunk in stream)
        assert first + sum(sizes) + rest == clients * len(data)
        return sizes

    assert max(fill_and_read("alone", 1)) == 1 << 20
    assert max(fill_and_read("crowd", 50)) <= (32 << 20) // (2 * 50)


def test_a_stopping_server_waits_for_its_fills_to_finish(tmp_path: Path, upstream: FakeUpstream):
    """The client that started a fill may be gone (or done: it has its bytes before the fill is renamed and recorded);
    the server's shutdown waits for the download instead of killing it mid-way and leaving its files behind."""
    digest = upstream.add_blob("repo", DATA)
    filler, metadata = process(tmp_path)
    filler.fill(FillJob("up/repo", "up", "repo", digest), lambda: upstream.open_blob("repo", digest),
                lambda size: metadata.put_blob("up", "repo", digest, size))  # fmt: skip
    assert not filler.drain(0.05)  # 16 chunks at 20 ms: still downloading
    assert filler.drain(10)
    assert metadata.get_blob("up", "repo", digest) == len(DATA)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_files_of_a_process_killed_mid_fill_are_removed_once_abandoned(tmp_path: Path):
    store = FileBlobStore(tmp_path)
    aged = time.time() - ABANDONED_AFTER_SECONDS - 60

    def put(name: str, content: bytes, *, old: bool) -> Path:
        path = store.temp_dir / name
        path.write_bytes(content)
        if old:
            os.utime(path, (aged, aged))
        return path

    def pointer(name: str, temp: str) -> Path:
        return put(name, json.dumps({"temp": temp, "size": 100}).encode(), old=True)

    killed = put("deadbeef00000000.killed", b"k" * 100, old=True)
    killed_pointer = pointer("fill-aaaa.json", killed.name)
    long_fill = put("deadbeef00000000.live", b"l" * 10, old=False)  # a fill of hours: still written to
    long_fill_pointer = pointer("fill-bbbb.json", long_fill.name)
    unreadable_pointer = put("fill-cccc.json", b"{", old=True)
    staging = put("fill-dddd.json.0123abcd", b"{}", old=True)  # killed between writing and renaming a pointer
    fresh_pointer = put("fill-eeee.json", json.dumps({"temp": "gone", "size": 1}).encode(), old=False)

    abandoned_bytes = sum(path.stat().st_size for path in (killed, killed_pointer, unreadable_pointer, staging))

    assert remove_abandoned(store) == abandoned_bytes
    assert sorted(path.name for path in store.temp_dir.iterdir()) == sorted(
        [long_fill.name, long_fill_pointer.name, fresh_pointer.name])  # fmt: skip
