"""Real clients pull every test image through `pullthrough serve` from a real upstream registry.

For each client and image: the cold pull gives the upstream's digests and fetches each manifest and blob from the
upstream exactly once; warm pulls by tag (within the TTL) and by digest reach the upstream zero times.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import PREFIX
from tests.support.clients import Containerd, Podman, skopeo_copy, skopeo_inspect_digest, verify_dir_digests
from tests.support.images import TestImage
from tests.support.pullthrough import PullthroughServer
from tests.support.upstream import AccessLogEntry, DistributionRegistry, summarize

pytestmark = pytest.mark.e2e

IMAGES = ["single-oci", "multi-oci", "single-docker", "multi-docker", "big"]


def platforms(image: TestImage) -> list[tuple[str, str | None]]:
    """(arch, variant) of every platform, e.g. [("amd64", None), ("arm64", "v8")]."""
    result = []
    for platform in image.platforms:
        _, arch, *variant = platform.split("/")
        result.append((arch, variant[0] if variant else None))
    return result


class SkopeoPuller:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pulls = 0

    def pull(self, ref: str, arch: str, variant: str | None, image: TestImage) -> None:
        self.pulls += 1
        out = self.workdir / f"pull-{self.pulls}"
        skopeo_copy(ref, out, arch=arch, variant=variant)
        assert verify_dir_digests(out) <= image.blob_digests


class PodmanPuller:
    def __init__(self, workdir: Path) -> None:
        self.podman = Podman(workdir / "podman")

    def pull(self, ref: str, arch: str, variant: str | None, image: TestImage) -> None:
        self.podman.pull(ref, arch=arch, variant=variant)
        name = ref.split("@")[0].rsplit(":", 1)[0] if "@" not in ref else ref.split("@")[0]
        assert f"{name}@{image.digest}" in self.podman.repo_digests(ref)


class CtrPuller:
    def __init__(self, containerd: Containerd) -> None:
        self.containerd = containerd

    def pull(self, ref: str, arch: str, variant: str | None, image: TestImage) -> None:
        platform = "/".join(part for part in ("linux", arch, variant) if part)
        self.containerd.pull(ref, platform=platform)
        assert self.containerd.image_digest(ref) == image.digest


@pytest.fixture(params=["skopeo", "podman", "ctr"])
def puller(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "skopeo":
        yield SkopeoPuller(tmp_path)
    elif request.param == "podman":
        yield PodmanPuller(tmp_path)
    else:
        with Containerd(tmp_path / "containerd") as containerd:
            yield CtrPuller(containerd)


def fetches(entries: list[AccessLogEntry]) -> Counter[str]:
    """How many times each manifest or blob was fetched (GET) from the upstream, by the last path segment."""
    return Counter(entry.path.rsplit("/", 1)[1] for entry in entries if entry.method == "GET" and entry.status == 200)


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
