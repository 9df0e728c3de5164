"""The mirror configurations the README documents, with real clients: containerd through hosts.toml (the cache
under a path prefix) and a root rule for clients that cannot add a prefix (Docker's registry-mirrors)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PREFIX
from tests.support.clients import Containerd, skopeo_copy, verify_dir_digests, write_mirror_hosts
from tests.support.images import TestImage
from tests.support.pullthrough import PullthroughServer
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e


def test_containerd_hosts_toml_sends_an_upstream_registry_through_the_cache(
    tmp_path: Path, pullthrough: PullthroughServer, upstream_registry: DistributionRegistry, test_images
):
    image: TestImage = test_images["multi-oci"]
    write_mirror_hosts(
        tmp_path / "certs.d", upstream_registry.host, f"{pullthrough.url}/v2/{PREFIX}", override_path=True
    )
    with Containerd(tmp_path / "containerd") as containerd:
        # the client names the upstream registry; containerd goes to the cache instead
        containerd.pull(image.ref(upstream_registry.host), platform="linux/arm64/v8", hosts_dir=tmp_path / "certs.d")
        assert containerd.image_digest(image.ref(upstream_registry.host)) == image.digest
    # containerd falls back to the registry itself when a mirror fails: make sure the cache did the work
    catalog = httpx.get(f"{pullthrough.url}/v2/_catalog").json()
    assert catalog == {"repositories": [f"{PREFIX}/{image.repository}"]}


def test_root_rule_serves_names_without_a_prefix(tmp_path: Path, upstream_registry: DistributionRegistry, test_images):
    image: TestImage = test_images["single-docker"]
    rules = [{"prefix": "", "upstream": upstream_registry.url, "library_namespace": True}]
    with PullthroughServer(tmp_path / "root", rules) as cache:
        short = image.repository.removeprefix("library/")
        skopeo_copy(f"{cache.host}/{short}:{image.tag}", tmp_path / "short")
        skopeo_copy(image.ref(cache.host), tmp_path / "full")
        assert verify_dir_digests(tmp_path / "short") == verify_dir_digests(tmp_path / "full") == image.blob_digests
