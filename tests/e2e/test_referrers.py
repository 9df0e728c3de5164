"""Signatures and SBOMs through the cache: the referrers API answered through `serve` and the Lambda path for the
real upstream (distribution 2.8, which has no referrers API: artifacts pushed with the tag-schema fallback), and for
an upstream that has one; every referrer and its blobs pulled through verified; the answer served stale while the
upstream is down."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.digest import Digest
from core.mediatypes import OCI_INDEX, OCI_MANIFEST
from tests.e2e.conftest import lambda_server
from tests.support.clients import skopeo, skopeo_copy, verify_dir_digests
from tests.support.faulty import FaultyUpstream
from tests.support.images import TestImage
from tests.support.moto import MotoServer
from tests.support.pullthrough import PullthroughServer
from tests.support.registry_api import push_referrer
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e

SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM = "application/spdx+json"
TTL = 2


@pytest.fixture
def signed(upstream_registry: DistributionRegistry, test_images) -> tuple[str, TestImage, dict[str, Digest]]:
    """A repository of its own holding a test image, a signature and an SBOM of it, as cosign and oras push them to a
    registry without the referrers API."""
    image: TestImage = test_images["single-oci"]
    repository = f"library/signed-{uuid.uuid4().hex[:8]}"
    source, target = (
        f"docker://{image.ref(upstream_registry.host)}",
        f"docker://{upstream_registry.host}/{repository}:v1",
    )
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests", source, target)
    subject = Digest.parse(image.digest)
    referrers = {
        SIGNATURE: push_referrer(upstream_registry.url, repository, subject, SIGNATURE, b'{"critical": {}}'),
        SBOM: push_referrer(upstream_registry.url, repository, subject, SBOM, b'{"spdxVersion": "SPDX-2.3"}',
                            annotations={"org.opencontainers.image.created": "2026-12-02T00:00:00Z"}),
    }  # fmt: skip
    return repository, image, referrers


@pytest.fixture
def faulty(upstream_registry: DistributionRegistry) -> Iterator[FaultyUpstream]:
    with FaultyUpstream(upstream_registry.url) as proxy:
        yield proxy


@pytest.fixture(params=["serve", "lambda"])
def cache(request, tmp_path: Path, faulty: FaultyUpstream, moto: MotoServer) -> Iterator[PullthroughServer]:
    rules = [{"prefix": prefix, "upstream": faulty.url, "tag_ttl_seconds": TTL} for prefix in ("up", "native")]
    if request.param == "serve":
        server = PullthroughServer(tmp_path / "cache", rules)
    else:
        server = lambda_server(tmp_path / "lambda", moto, rules, sync_max=256 << 20)
    with server:
        yield server


def referrers(cache: PullthroughServer, name: str, subject: Digest, **params: str) -> httpx.Response:
    response = httpx.get(f"{cache.url}/v2/{name}/referrers/{subject}", params=params, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == OCI_INDEX
    index = response.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    return response


def listed(response: httpx.Response) -> dict[str, str]:
    return {entry["digest"]: entry["artifactType"] for entry in response.json()["manifests"]}


def test_the_referrers_of_an_image_on_an_upstream_without_the_api(cache: PullthroughServer, signed, tmp_path, faulty):
    repository, image, pushed = signed
    name, subject = f"up/{repository}", Digest.parse(image.digest)

    everything = referrers(cache, name, subject)
    assert listed(everything) == {str(digest): kind for kind, digest in pushed.items()}
    sbom_entry = next(entry for entry in everything.json()["manifests"] if entry["artifactType"] == SBOM)
    assert sbom_entry["annotations"] == {"org.opencontainers.image.created": "2026-12-02T00:00:00Z"}
    only_signatures = referrers(cache, name, subject, artifactType=SIGNATURE)
    assert only_signatures.headers["oci-filters-applied"] == "artifactType"
    assert listed(only_signatures) == {str(pushed[SIGNATURE]): SIGNATURE}

    # each referrer pulls through by digest, verified: skopeo copies the artifact and hashes every blob
    for kind, digest in pushed.items():
        out = tmp_path / f"referrer-{kind.rsplit('/', 1)[1]}"
        skopeo_copy(f"{cache.host}/{name}@{digest}", out)
        manifest = (out / "manifest.json").read_bytes()
        assert Digest.of(manifest) == digest
        document = json.loads(manifest)
        assert document["subject"]["digest"] == image.digest
        assert verify_dir_digests(out) == {document["config"]["digest"], document["layers"][0]["digest"]}

    # a subject with no referrers: an empty index, never a 404 (clients would take it for "no referrers API")
    assert listed(referrers(cache, name, pushed[SIGNATURE])) == {}

    # the upstream down: the cached answer, said to be stale
    time.sleep(TTL + 0.5)
    faulty.faults.unavailable_every = 1
    stale = referrers(cache, name, subject)
    assert listed(stale) == listed(everything)
    assert "upstream failed" in stale.headers["warning"]


def test_the_referrers_api_of_an_upstream_that_has_one(cache: PullthroughServer, signed, faulty):
    """Passed through (the tag schema is not read), filtered here, and cached for the tag TTL."""
    repository, image, pushed = signed
    subject = Digest.parse(image.digest)
    descriptor = {"mediaType": OCI_MANIFEST, "digest": str(pushed[SIGNATURE]), "size": 1, "artifactType": SIGNATURE}
    native = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}).encode()
    path = f"/v2/{repository}/referrers/{subject}"
    faulty.faults.canned[path] = (200, {"Content-Type": OCI_INDEX, "Content-Length": str(len(native))}, native)

    assert listed(referrers(cache, f"native/{repository}", subject)) == {str(pushed[SIGNATURE]): SIGNATURE}
    assert listed(referrers(cache, f"native/{repository}", subject, artifactType=SBOM)) == {}
    assert faulty.count("GET", f"{path}$") == 1  # the second, filtered here from the cached answer
    assert faulty.count("GET", rf"/manifests/sha256-{subject.encoded}$") == 0
