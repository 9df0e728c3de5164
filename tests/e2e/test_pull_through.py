"""Real clients pull every test image through `pullthrough serve` from a real upstream registry.

For each client and image: the cold pull gives the upstream's digests and fetches each manifest and blob from the
upstream exactly once; warm pulls by tag (within the TTL) and by digest reach the upstream zero times.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import IMAGES, PREFIX, fetches, platforms
from tests.support.clients import skopeo_copy, skopeo_inspect_digest, verify_dir_digests
from tests.support.images import TestImage
from tests.support.pullthrough import PullthroughServer
from tests.support.upstream import DistributionRegistry, summarize

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("key", IMAGES)
def test_cold_pull_fetches_everything_once_and_warm_pulls_fetch_nothing(
    key: str,
    puller,
    pullthrough: PullthroughServer,
    upstream_registry: DistributionRegistry,
    test_images: dict[str, TestImage],
):
    image = test_images[key]
    mark = upstream_registry.mark()
    for arch, variant in platforms(image):
        puller.pull(image.ref(pullthrough.host, PREFIX), arch, variant, image)
    cold = upstream_registry.requests_since(mark)

    fetched = fetches(cold)
    assert all(count == 1 for count in fetched.values()), fetched
    assert set(image.blob_digests) <= set(fetched), "every blob came from the upstream"
    assert set(image.manifest_digests) - {image.digest} <= set(fetched), "every child manifest came from upstream"
    _, upstream_bytes = summarize(cold)
    manifests_allowance = 64 * 1024
    assert image.blob_bytes <= upstream_bytes <= image.blob_bytes + manifests_allowance

    mark = upstream_registry.mark()
    for arch, variant in platforms(image):
        puller.pull(image.ref(pullthrough.host, PREFIX), arch, variant, image)
        puller.pull(image.ref_by_digest(pullthrough.host, PREFIX), arch, variant, image)
    assert upstream_registry.requests_since(mark) == []


@pytest.mark.parametrize("key", IMAGES)
def test_pull_by_digest_of_an_uncached_image_fills_the_cache(
    key: str, pullthrough: PullthroughServer, upstream_registry: DistributionRegistry, test_images, tmp_path: Path
):
    image = test_images[key]
    arch, variant = platforms(image)[-1]
    skopeo_copy(image.ref_by_digest(pullthrough.host, PREFIX), tmp_path / "by-digest", arch=arch, variant=variant)
    verify_dir_digests(tmp_path / "by-digest")
    assert skopeo_inspect_digest(image.ref_by_digest(pullthrough.host, PREFIX)) == image.digest
    mark = upstream_registry.mark()
    skopeo_copy(image.ref_by_digest(pullthrough.host, PREFIX), tmp_path / "again", arch=arch, variant=variant)
    assert upstream_registry.requests_since(mark) == []
