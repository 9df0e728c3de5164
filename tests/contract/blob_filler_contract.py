"""What every BlobFiller must do, however it delivers the bytes (streamed while written, or stored then redirected
to); each backend's test class inherits this and provides a `parts` fixture: (filler, blob store, fill state)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from core.errors import BlobUnknown, Denied, DigestMismatch, RegistryError
from core.ports import BlobBody, BlobFiller, BlobStore, FillJob, FillState, LocalBlob, Redirect, StreamedBlob
from tests.fakes import FakeUpstream

Parts = tuple[BlobFiller, BlobStore, FillState]

DATA = bytes(range(256)) * 4000  # about 1 MB


def received(body: BlobBody, store: BlobStore, job: FillJob) -> bytes:
    """What a client gets: the streamed bytes, the stored file, or what a redirect points at."""
    if isinstance(body, StreamedBlob):
        data = b"".join(body.chunks(0, body.size))
        body.stored()
        return data
    if isinstance(body, LocalBlob):
        with open(body.path, "rb") as file:
            return file.read()
    assert isinstance(body, Redirect)
    data = store.read(job.digest)
    assert data is not None
    return data


class BlobFillerContract:
    @pytest.fixture
    def upstream(self) -> FakeUpstream:
        upstream = FakeUpstream()
        upstream.chunk_size = 1 << 16
        return upstream

    def fill(self, parts: Parts, upstream: FakeUpstream, job: FillJob, commits: list[int] | None = None) -> BlobBody:
        filler, _, state = parts

        def on_commit(size: int) -> None:
            state.put_blob(job.scope, job.repository, job.digest, size)
            if commits is not None:
                commits.append(size)

        return filler.fill(job, lambda: upstream.open_blob(job.repository, job.digest), on_commit)

    def test_a_missing_blob_is_copied_once_verified_and_recorded(self, parts, upstream: FakeUpstream):
        _, store, state = parts
        job = FillJob("up/repo", "up", "repo", upstream.add_blob("repo", DATA))
        commits: list[int] = []
        assert received(self.fill(parts, upstream, job, commits), store, job) == DATA
        assert commits == [len(DATA)] and store.exists(job.digest)
        assert state.get_blob("up", "repo", job.digest) == len(DATA)
        assert upstream.calls == {"open_blob": 1}

    def test_corrupt_bytes_are_never_stored_or_delivered_whole(self, parts, upstream: FakeUpstream):
        _, store, _ = parts
        job = FillJob("up/repo", "up", "repo", upstream.add_blob("repo", DATA))
        upstream.corrupt_blobs = True
        commits: list[int] = []
        with pytest.raises(DigestMismatch):
            received(self.fill(parts, upstream, job, commits), store, job)
        assert commits == [] and not store.exists(job.digest)

    def test_a_blob_the_upstream_lacks_is_unknown(self, parts, upstream: FakeUpstream):
        upstream.add_blob("repo", b"something else")
        job = FillJob("up/repo", "up", "repo", FakeUpstream().add_blob("repo", DATA))
        with pytest.raises(BlobUnknown):
            self.fill(parts, upstream, job)

    def test_a_blob_over_the_rules_maximum_is_denied_and_not_stored(self, parts, upstream: FakeUpstream):
        _, store, _ = parts
        job = FillJob("up/repo", "up", "repo", upstream.add_blob("repo", DATA), max_size=len(DATA) - 1)
        with pytest.raises(Denied):
            received(self.fill(parts, upstream, job), store, job)
        assert not store.exists(job.digest)

    def test_concurrent_fills_of_one_job_fetch_once(self, parts, upstream: FakeUpstream):
        _, store, _ = parts
        job = FillJob("up/repo", "up", "repo", upstream.add_blob("repo", DATA))
        upstream.chunk_delay = 0.01  # a download that lasts, so that the fills overlap it
        results = self._concurrently(lambda: received(self.fill(parts, upstream, job), store, job), 4)
        assert results == [DATA] * 4
        assert upstream.calls["open_blob"] == 1

    def test_fills_of_two_rules_never_share_a_download(self, parts, upstream: FakeUpstream):
        _, store, _ = parts
        digest = upstream.add_blob("repo", DATA)
        upstream.chunk_delay = 0.01
        jobs = iter([FillJob("a/repo", "a", "repo", digest), FillJob("b/repo", "b", "repo", digest)])
        lock = threading.Lock()

        def one() -> bytes:
            with lock:
                job = next(jobs)
            return received(self.fill(parts, upstream, job), store, job)

        assert self._concurrently(one, 2) == [DATA] * 2
        assert upstream.calls["open_blob"] == 2

    @staticmethod
    def _concurrently(work: Any, count: int) -> list[Any]:
        results: list[Any] = []
        failures: list[BaseException] = []

        def run() -> None:
            try:
                results.append(work())
            except RegistryError as exc:
                failures.append(exc)

        threads = [threading.Thread(target=run) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        return results
