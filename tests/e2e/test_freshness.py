"""A tag moving upstream: within the TTL the cache serves the old digest without asking; after it, the new one;
`pullthrough refresh` picks up a move with no client pulling, and asks unchanged tags with HEADs only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import PREFIX
from tests.support.clients import skopeo, skopeo_inspect_digest
from tests.support.images import TestImage
from tests.support.pullthrough import PullthroughServer, pullthrough_cli
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e

TTL = 4  # long enough that a slow machine finishes each "within the TTL" step inside it


def point_tag(upstream: DistributionRegistry, image: TestImage, target: str) -> None:
    source, dest = f"docker://{image.ref(upstream.host)}", f"docker://{upstream.host}/{target}"
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests", source, dest)


def run_refresh(cache: PullthroughServer, *args: str) -> str:
    done = pullthrough_cli("refresh", "--data-dir", cache.data_dir, "--rules", cache.workdir / "rules.json",
                           "--allow-private-upstreams", *args)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_moving_tag(tmp_path: Path, upstream_registry: DistributionRegistry, test_images):
    first, second = test_images["single-oci"], test_images["single-docker"]
    point_tag(upstream_registry, first, "library/moving:v1")
    rules = [{"prefix": PREFIX, "upstream": upstream_registry.url, "tag_ttl_seconds": TTL}]
    with PullthroughServer(tmp_path / "cache", rules) as cache:
        ref = f"{cache.host}/{PREFIX}/library/moving:v1"
        assert skopeo_inspect_digest(ref) == first.digest
        point_tag(upstream_registry, second, "library/moving:v1")

        mark = upstream_registry.mark()
        assert skopeo_inspect_digest(ref) == first.digest  # within the TTL: the cached digest, no upstream contact
        assert upstream_registry.requests_since(mark) == []

        time.sleep(TTL + 0.5)
        mark = upstream_registry.mark()
        assert skopeo_inspect_digest(ref) == second.digest
        assert [entry.method for entry in upstream_registry.requests_since(mark)] == ["HEAD", "GET"]

        # moved back, and nobody pulls: the refresh job fetches it
        point_tag(upstream_registry, first, "library/moving:v1")
        time.sleep(TTL + 0.5)
        mark = upstream_registry.mark()
        report = run_refresh(cache)
        assert f"{PREFIX}/library/moving:v1\tupdated\t{second.digest} -> {first.digest}" in report
        assert [entry.method for entry in upstream_registry.requests_since(mark)] == ["HEAD"]  # first is cached
        mark = upstream_registry.mark()
        assert skopeo_inspect_digest(ref) == first.digest
        assert upstream_registry.requests_since(mark) == []

        # unchanged tags cost one HEAD each, and a tag just confirmed costs nothing
        time.sleep(TTL + 0.5)
        mark = upstream_registry.mark()
        assert "unchanged" in run_refresh(cache)
        assert run_refresh(cache).strip() == ""
        assert [(e.method, e.path) for e in upstream_registry.requests_since(mark)] == [
            ("HEAD", "/v2/library/moving/manifests/v1")
        ]

        # a manual refresh of one image, whatever its age
        assert f"{PREFIX}/library/moving:v1\tunchanged\t{first.digest}" in run_refresh(
            cache, f"{PREFIX}/library/moving:v1"
        )
