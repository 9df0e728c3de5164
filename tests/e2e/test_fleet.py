"""A fleet pulling at once: 8 concurrent cold pulls of the big image, through several `pullthrough serve` processes
and through the Lambda path, and the upstream serves each manifest and each blob once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import PREFIX, cache_rules, fetches, lambda_server
from tests.support.clients import skopeo_copy, verify_dir_digests
from tests.support.images import TestImage
from tests.support.moto import MotoServer
from tests.support.pullthrough import PullthroughServer
from tests.support.upstream import DistributionRegistry, summarize

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 8


def pull_concurrently(image: TestImage, host: str, workdir: Path) -> None:
    def pull(index: int) -> set[str]:
        out = workdir / f"client-{index}"
        skopeo_copy(image.ref(host, PREFIX), out)
        return verify_dir_digests(out)

    with ThreadPoolExecutor(CLIENTS) as pool:
        assert list(pool.map(pull, range(CLIENTS))) == [image.blob_digests] * CLIENTS


def assert_fetched_once(upstream: DistributionRegistry, mark: int, image: TestImage) -> None:
    cold = upstream.requests_since(mark)
    fetched = fetches(cold)
    assert set(image.blob_digests) <= set(fetched)
    assert all(count == 1 for count in fetched.values()), fetched  # the tag, the manifest, every blob: once
    _, sent = summarize(cold)
    assert sent <= image.blob_bytes + 64 * 1024, f"{sent} bytes for an image of {image.blob_bytes}"


def test_concurrent_cold_pulls_through_several_server_processes(
    tmp_path: Path, upstream_registry: DistributionRegistry, test_images
):
    image: TestImage = test_images["big"]
    with PullthroughServer(tmp_path / "cache", cache_rules(upstream_registry), workers=2) as cache:
        mark = upstream_registry.mark()
        pull_concurrently(image, cache.host, tmp_path)
        assert_fetched_once(upstream_registry, mark, image)


def test_concurrent_cold_pulls_through_the_lambda_path(
    tmp_path: Path,
    moto: MotoServer,
    upstream_registry: DistributionRegistry,
    test_images,
):
    image: TestImage = test_images["big"]
    with lambda_server(tmp_path / "lambda", moto, cache_rules(upstream_registry), sync_max=256 << 20) as cache:
        mark = upstream_registry.mark()
        pull_concurrently(image, cache.host, tmp_path)
        assert_fetched_once(upstream_registry, mark, image)
