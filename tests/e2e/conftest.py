"""One real upstream registry per test session, holding the five test images; a fresh cache per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import TestImage, push_test_images
from tests.support.pullthrough import PullthroughServer
from tests.support.upstream import DistributionRegistry

PREFIX = "up"
TAG_TTL_SECONDS = 3600


@pytest.fixture(scope="session")
def upstream_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributionRegistry]:
    with DistributionRegistry(tmp_path_factory.mktemp("upstream")) as registry:
        yield registry


@pytest.fixture(scope="session")
def test_images(
    upstream_registry: DistributionRegistry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, TestImage]:
    return push_test_images(upstream_registry.host, tmp_path_factory.mktemp("images"))


def cache_rules(upstream: DistributionRegistry, ttl: int = TAG_TTL_SECONDS) -> list[dict[str, object]]:
    return [{"prefix": PREFIX, "upstream": upstream.url, "tag_ttl_seconds": ttl}]


@pytest.fixture
def pullthrough(tmp_path: Path, upstream_registry: DistributionRegistry) -> Iterator[PullthroughServer]:
    with PullthroughServer(tmp_path / "pullthrough", cache_rules(upstream_registry)) as server:
        yield server
