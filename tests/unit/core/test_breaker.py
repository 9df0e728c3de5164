"""The upstream guard: a breaker that opens only on failures of the whole upstream, after several in a row, shared
by every process through the store, with a half-open probe; and a short memory of "not found"."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.breaker import (
    BASE_BACKOFF_SECONDS,
    FAILURE_THRESHOLD,
    NOT_FOUND_SECONDS,
    GuardedUpstream,
)
from core.digest import Digest
from core.errors import BlobUnknown, ManifestUnknown, TooManyRequests, Unavailable
from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
from tests.conftest import Clock
from tests.fakes import FakeUpstream

DOWN = Unavailable("connection refused", whole_upstream=True)


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SqliteMetadataStore:
    return SqliteMetadataStore(tmp_path / "m.sqlite3", clock=clock)


def guarded(upstream: FakeUpstream, store: SqliteMetadataStore, clock: Clock, scope: str = "up") -> GuardedUpstream:
    return GuardedUpstream(upstream, store, "https://up.example", scope, clock)


def fail_times(times: int, upstream: FakeUpstream, store, clock, failure=DOWN) -> None:
    upstream.failure = failure
    for _ in range(times):
        with pytest.raises(type(failure)):
            guarded(upstream, store, clock).head_manifest("app", "v1")
    upstream.failure = None


def test_one_failure_of_the_whole_upstream_darkens_nothing(upstream, store, clock):
    upstream.add_image("app", "v1")
    fail_times(FAILURE_THRESHOLD - 1, upstream, store, clock)
    assert guarded(upstream, store, clock).head_manifest("app", "v1").digest is not None
    fail_times(FAILURE_THRESHOLD - 1, upstream, store, clock)  # the success started the count over
    assert guarded(upstream, store, clock).head_manifest("app", "v1").digest is not None
    assert upstream.calls["head_manifest"] == 2 * FAILURE_THRESHOLD


def test_failures_in_a_row_open_the_breaker_for_every_process(upstream, store, clock):
    upstream.add_image("app", "v1")
    fail_times(FAILURE_THRESHOLD, upstream, store, clock)
    asked = sum(upstream.calls.values())
    other_process = guarded(upstream, store, clock)  # the state is shared through the store
    for _ in range(5):
        with pytest.raises(Unavailable, match="not asking") as refused:
            other_process.get_manifest("app", "v1")
    assert 1 <= refused.value.retry_after <= BASE_BACKOFF_SECONDS
    assert sum(upstream.calls.values()) == asked


def test_failures_far_apart_are_not_in_a_row(upstream, store, clock):
    upstream.add_image("app", "v1")
    for _ in range(FAILURE_THRESHOLD + 2):
        fail_times(1, upstream, store, clock)
        clock.advance(61)
    assert guarded(upstream, store, clock).head_manifest("app", "v1").digest is not None


@pytest.mark.parametrize(
    "failure",
    [Unavailable("upstream answered 500"), Unavailable("download broke off"), ManifestUnknown(), BlobUnknown()],
)
def test_failures_of_one_request_never_open_it(upstream, store, clock, failure):
    upstream.add_image("app", "v1")
    fail_times(FAILURE_THRESHOLD * 3, upstream, store, clock, failure)
    assert store.get_breaker("https://up.example") is None


def test_a_throttled_upstream_is_left_alone_for_its_retry_after_then_probed_once(upstream, store, clock):
    upstream.add_image("app", "v1")
    fail_times(FAILURE_THRESHOLD, upstream, store, clock, TooManyRequests("slow down", retry_after=120))
    with pytest.raises(TooManyRequests) as refused:
        guarded(upstream, store, clock).head_manifest("app", "v1")
    assert 110 <= refused.value.retry_after <= 120
    clock.advance(121)
    # half open: the first caller probes; while it holds the probe, the others are still refused
    store.acquire_lease("probe/https://up.example", "a-prober-elsewhere", 60)
    with pytest.raises(TooManyRequests, match="not asking"):
        guarded(upstream, store, clock).head_manifest("app", "v1")
    store.release_lease("probe/https://up.example", "a-prober-elsewhere")
    asked = upstream.calls["head_manifest"]
    assert guarded(upstream, store, clock).head_manifest("app", "v1").digest is not None
    assert upstream.calls["head_manifest"] == asked + 1
    assert store.get_breaker("https://up.example") is None  # closed


def test_a_failed_probe_opens_it_again_for_twice_as_long(upstream, store, clock):
    upstream.add_image("app", "v1")
    fail_times(FAILURE_THRESHOLD, upstream, store, clock)
    clock.advance(BASE_BACKOFF_SECONDS + 1)
    fail_times(1, upstream, store, clock)  # the probe
    with pytest.raises(Unavailable, match="not asking") as refused:
        guarded(upstream, store, clock).head_manifest("app", "v1")
    assert BASE_BACKOFF_SECONDS < refused.value.retry_after <= 2 * BASE_BACKOFF_SECONDS
    assert store.get_breaker("https://up.example").trips == 2


def test_not_found_is_remembered_briefly_per_rule(upstream, store, clock):
    upstream.add_image("app", "v1")
    missing = Digest.of(b"absent")
    for _ in range(3):
        with pytest.raises(ManifestUnknown):
            guarded(upstream, store, clock).get_manifest("app", "nope")
        with pytest.raises(BlobUnknown):
            guarded(upstream, store, clock).head_blob("app", missing)
        with pytest.raises(BlobUnknown):
            guarded(upstream, store, clock).head_blob("app", missing)
    assert upstream.calls == {"get_manifest": 1, "head_blob": 1}
    with pytest.raises(BlobUnknown):  # another rule on the same upstream asks for itself
        guarded(upstream, store, clock, scope="other").head_blob("app", missing)
    assert upstream.calls["head_blob"] == 2
    clock.advance(NOT_FOUND_SECONDS)
    with pytest.raises(ManifestUnknown):
        guarded(upstream, store, clock).get_manifest("app", "nope")
    assert upstream.calls["get_manifest"] == 2
    upstream.tags[("app", "nope")] = upstream.tags[("app", "v1")]  # pushed meanwhile: found once remembered no more
    clock.advance(NOT_FOUND_SECONDS)
    assert guarded(upstream, store, clock).get_manifest("app", "nope").data


@pytest.mark.parametrize("whole, opens", [(True, True), (False, False)])
def test_a_download_that_stalls_counts_against_the_upstream_a_cut_one_does_not(upstream, store, clock, whole, opens):
    data = b"y" * 300_000
    digest = upstream.add_blob("app", data)

    def broken():
        yield data[:1000]
        raise Unavailable("stalled" if whole else "connection reset", whole_upstream=whole)

    upstream._chunks = lambda _: broken()  # type: ignore[method-assign]
    for _ in range(FAILURE_THRESHOLD):
        with pytest.raises(Unavailable), guarded(upstream, store, clock).open_blob("app", digest) as blob:
            b"".join(blob.chunks)
    state = store.get_breaker("https://up.example")
    assert (state is not None and state.open_until > clock()) == opens
