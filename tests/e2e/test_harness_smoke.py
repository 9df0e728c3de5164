"""The e2e harness itself, against a plain distribution registry with no cache in between.

If these fail, the cache's e2e tests would fail for reasons that have nothing to do with the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import (
    Containerd,
    Podman,
    skopeo_copy,
    skopeo_inspect_digest,
    verify_dir_digests,
    write_mirror_hosts,
)
from tests.support.images import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    TestImage,
    push_test_images,
)
from tests.support.proc import CommandError
from tests.support.upstream import DistributionRegistry, summarize

pytestmark = pytest.mark.e2e

MEDIA_TYPES = {
    "single-oci": OCI_MANIFEST,
    "multi-oci": OCI_INDEX,
    "single-docker": DOCKER_MANIFEST,
    "multi-docker": DOCKER_LIST,
    "big": OCI_MANIFEST,
}
BIG_LAYER_MIB = 64


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributionRegistry]:
    with DistributionRegistry(tmp_path_factory.mktemp("upstream")) as registry:
        yield registry


@pytest.fixture(scope="module")
def images(upstream: DistributionRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestImage]:
    return push_test_images(upstream.host, tmp_path_factory.mktemp("images"), big_layer_mib=BIG_LAYER_MIB)


def arch_variant(platform: str) -> tuple[str, str | None]:
    """'linux/arm64/v8' -> ('arm64', 'v8'), as skopeo's and podman's --arch/--variant want them."""
    _os, arch, *variant = platform.split("/")
    return arch, variant[0] if variant else None


def test_images_are_what_the_upstream_stores(
    upstream: DistributionRegistry, images: dict[str, TestImage], tmp_path: Path
) -> None:
    assert {key: image.media_type for key, image in images.items()} == MEDIA_TYPES
    for key, image in images.items():
        assert skopeo_inspect_digest(image.ref(upstream.host)) == image.digest, key
        assert image.digest in image.manifest_digests
        multi = image.media_type in (OCI_INDEX, DOCKER_LIST)
        assert len(image.manifest_digests) == (3 if multi else 1), key
        assert image.platforms == (("linux/amd64", "linux/arm64/v8") if multi else ("linux/amd64",)), key
        assert image.largest_blob in image.blob_digests
    assert images["big"].blob_bytes > BIG_LAYER_MIB << 20
    # The Docker variants are conversions: same configs and layers, other manifests.
    assert images["single-docker"].blob_digests == images["single-oci"].blob_digests
    assert images["multi-docker"].blob_digests == images["multi-oci"].blob_digests
    assert images["single-docker"].digest != images["single-oci"].digest
    # Rebuilding from scratch gives the same digests, and pushing again is harmless.
    assert push_test_images(upstream.host, tmp_path, big_layer_mib=BIG_LAYER_MIB) == images


def test_refs() -> None:
    image = TestImage("k", "library/x", "v1", "sha256:ab", OCI_MANIFEST, (), frozenset(), frozenset(), 0, "")
    assert image.ref("127.0.0.1:5001") == "127.0.0.1:5001/library/x:v1"
    assert image.ref("127.0.0.1:5001", "up/") == "127.0.0.1:5001/up/library/x:v1"
    assert image.ref_by_digest("127.0.0.1:5001", "a/b") == "127.0.0.1:5001/a/b/library/x@sha256:ab"


@pytest.mark.parametrize("key", MEDIA_TYPES)
def test_skopeo_pull(key: str, upstream: DistributionRegistry, images: dict[str, TestImage], tmp_path: Path) -> None:
    image = images[key]
    fetched: set[str] = set()
    for platform in image.platforms:
        arch, variant = arch_variant(platform)
        dest = tmp_path / platform.replace("/", "-")
        skopeo_copy(image.ref(upstream.host), dest, arch=arch, variant=variant)
        fetched |= verify_dir_digests(dest)
    assert fetched == image.blob_digests
    skopeo_copy(image.ref_by_digest(upstream.host), tmp_path / "by-digest", all_platforms=True)
    assert verify_dir_digests(tmp_path / "by-digest") == image.blob_digests


def test_verify_dir_digests_catches_a_corrupt_blob(tmp_path: Path) -> None:
    (tmp_path / ("0" * 64)).write_bytes(b"not what the name says")
    with pytest.raises(AssertionError, match="0000"):
        verify_dir_digests(tmp_path)


@pytest.mark.parametrize("key", MEDIA_TYPES)
def test_podman_pull(key: str, upstream: DistributionRegistry, images: dict[str, TestImage], tmp_path: Path) -> None:
    # A fresh storage per image: podman merges images that share a config (the OCI and Docker variants do).
    podman = Podman(tmp_path / "podman")
    image = images[key]
    ref = image.ref(upstream.host)
    pulled: set[str] = set()
    for platform in image.platforms:
        arch, variant = arch_variant(platform)
        podman.pull(ref, arch=arch, variant=variant)
        assert podman.image_digest(ref) == image.digest
        pulled |= {name.split("@", 1)[1] for name in podman.repo_digests(ref)}
    # The manifest, or the index and each platform's manifest.
    assert pulled == image.manifest_digests


@pytest.mark.parametrize("key", MEDIA_TYPES)
def test_ctr_pull(key: str, upstream: DistributionRegistry, images: dict[str, TestImage], tmp_path: Path) -> None:
    image = images[key]
    with Containerd(tmp_path / "containerd") as containerd:
        for n, platform in enumerate(image.platforms, start=1):
            containerd.pull(image.ref(upstream.host), platform=platform)
            assert containerd.image_digest(image.ref(upstream.host)) == image.digest
            complete = image.blob_digests | image.manifest_digests <= containerd.content_digests()
            assert complete == (n == len(image.platforms)), f"content after pulling {image.platforms[:n]}"
        containerd.pull(image.ref_by_digest(upstream.host))
        assert containerd.image_digest(image.ref_by_digest(upstream.host)) == image.digest


@pytest.mark.parametrize("key", ["single-oci", "big"])
def test_access_log_counts_a_pull(
    key: str, upstream: DistributionRegistry, images: dict[str, TestImage], tmp_path: Path
) -> None:
    image = images[key]
    mark = upstream.mark()
    skopeo_copy(image.ref(upstream.host), tmp_path / "out")
    entries = upstream.requests_since(mark)
    blob_gets = [e for e in entries if e.method == "GET" and e.status == 200 and "/blobs/" in e.path]
    assert {e.path.rsplit("/", 1)[1] for e in blob_gets} == image.blob_digests
    count, sent = summarize(entries)
    assert count == len(entries) > len(blob_gets)  # plus /v2/ and the manifest
    assert sent >= image.blob_bytes
    assert upstream.requests_since(upstream.mark()) == []


def test_distribution_proxy_as_a_containerd_mirror(
    upstream: DistributionRegistry, images: dict[str, TestImage], tmp_path: Path
) -> None:
    image = images["multi-docker"]
    with DistributionRegistry(tmp_path / "proxy", proxy_remote_url=upstream.url) as proxy:
        write_mirror_hosts(tmp_path / "hosts", upstream.host, proxy.url)
        upstream_mark, proxy_mark = upstream.mark(), proxy.mark()
        with Containerd(tmp_path / "containerd") as containerd:
            containerd.pull(image.ref(upstream.host), platform="linux/arm64/v8", hosts_dir=tmp_path / "hosts")
            assert containerd.image_digest(image.ref(upstream.host)) == image.digest
        served = {e.path.rsplit("/", 1)[1] for e in proxy.requests_since(proxy_mark) if e.method == "GET"}
        fetched = {e.path.rsplit("/", 1)[1] for e in upstream.requests_since(upstream_mark) if "/blobs/" in e.path}
    # containerd went through the mirror, and the mirror fetched the blobs from the upstream.
    assert image.digest in served
    assert fetched and fetched <= served <= image.blob_digests | image.manifest_digests


def test_upstream_restarts_on_the_same_port_with_its_storage(
    upstream: DistributionRegistry, images: dict[str, TestImage]
) -> None:
    ref, port = images["single-oci"].ref(upstream.host), upstream.port
    upstream.stop()
    with pytest.raises(CommandError):
        skopeo_inspect_digest(ref)
    upstream.start()
    assert upstream.port == port
    assert skopeo_inspect_digest(ref) == images["single-oci"].digest
