from __future__ import annotations

from pathlib import Path

import pytest

from core.cache import PullThroughCache
from core.rules import Rule, RuleSet
from pullthrough_adapters.local.blob_store import FileBlobStore
from pullthrough_adapters.local.filler import TeeFiller
from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
from tests.fakes import FakeUpstream, FakeUpstreams

TTL = 300


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rules() -> RuleSet:
    return RuleSet([
        Rule("up", "http://upstream.invalid", tag_ttl_seconds=TTL),
        Rule("hub", "https://hub.invalid", tag_ttl_seconds=TTL, library_namespace=True),
        Rule("other", "https://other.invalid"),
    ])  # fmt: skip


@pytest.fixture
def cache(tmp_path: Path, upstream: FakeUpstream, clock: Clock, rules: RuleSet) -> PullThroughCache:
    blobs = FileBlobStore(tmp_path / "data")
    metadata = SqliteMetadataStore(tmp_path / "data" / "metadata.sqlite3", clock=clock)
    return PullThroughCache(
        rules=rules,
        metadata=metadata,
        blobs=blobs,
        upstreams=FakeUpstreams(upstream),
        filler=TeeFiller(blobs, metadata),
        clock=clock,
    )
