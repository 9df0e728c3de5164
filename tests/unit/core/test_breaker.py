"""The shared back-off: a failing upstream is not asked again until its time is up, by anyone."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.local.metadata_store import SqliteMetadataStore
from core.breaker import GuardedUpstream
from core.digest import Digest
from core.errors import BlobUnknown, ManifestUnknown, TooManyRequests, Unavailable
from tests.conftest import Clock
from tests.fakes import FakeUpstream


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SqliteMetadataStore:
    return SqliteMetadataStore(tmp_path / "m.sqlite3", clock=clock)


def guarded(upstream: FakeUpstream, store: SqliteMetadataStore) -> GuardedUpstream:
    return GuardedUpstream(upstream, store, "https://up.example")


def test_a_throttled_upstream_is_left_alone_for_its_retry_after(upstream, store, clock):
    upstream.add_image("app", "v1")
    upstream.failure = TooManyRequests("slow down", retry_after=120)
    with pytest.raises(TooManyRequests):
        guarded(upstream, store).get_manifest("app", "v1")
    upstream.failure = None
    other_process = guarded(upstream, store)  # the back-off is shared through the store
    for _ in range(5):
        with pytest.raises(TooManyRequests) as raised:
            other_process.head_manifest("app", "v1")
    assert 1 <= raised.value.retry_after <= 120
    assert upstream.calls == {"get_manifest": 1}
    clock.advance(121)
    assert other_process.head_manifest("app", "v1").digest is not None


def test_an_unreachable_upstream_is_left_alone_for_a_while(upstream, store, clock):
    upstream.add_blob("app", b"x")
    upstream.failure = Unavailable("connection refused")
    with pytest.raises(Unavailable):
        guarded(upstream, store).head_blob("app", Digest.of(b"x"))
    with pytest.raises(Unavailable, match="not asking"), guarded(upstream, store).open_blob("app", Digest.of(b"x")):
        pass
    assert upstream.calls == {"head_blob": 1}


def test_not_found_is_an_answer_not_a_failure(upstream, store):
    upstream.add_image("app", "v1")
    for _ in range(3):
        with pytest.raises(ManifestUnknown):
            guarded(upstream, store).get_manifest("app", "nope")
        with pytest.raises(BlobUnknown):
            guarded(upstream, store).head_blob("app", Digest.of(b"absent"))
    assert store.get_backoff("https://up.example") is None


def test_a_download_breaking_off_midway_backs_off_too(upstream, store):
    data = b"y" * 300_000
    digest = upstream.add_blob("app", data)

    def broken():
        yield data[:1000]
        raise Unavailable("connection reset")

    upstream._chunks = lambda _: broken()  # type: ignore[method-assign]
    with pytest.raises(Unavailable), guarded(upstream, store).open_blob("app", digest) as blob:
        b"".join(blob.chunks)
    assert store.get_backoff("https://up.example") is not None
