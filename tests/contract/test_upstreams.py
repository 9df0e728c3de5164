"""The upstream contract, run against the fake used by unit tests and against the real HTTP client talking to a
real registry (CNCF distribution)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from core.digest import Digest
from core.mediatypes import OCI_MANIFEST
from core.rules import Rule
from pullthrough_adapters.upstream.addresses import AddressPolicy
from pullthrough_adapters.upstream.client import HttpUpstreams
from tests.contract.upstream_contract import SIGNATURE, SeededImage, UpstreamContract
from tests.fakes import FakeUpstream
from tests.support.registry_api import push_blob, push_manifest, push_referrer
from tests.support.upstream import DistributionRegistry

REPOSITORY = "library/contract"
LOOPBACK_ALLOWED = AddressPolicy(allow_private=True)  # the test registry listens on 127.0.0.1
TAGS = ("v1", "v2", "v3")


def image_document(config: Digest, layer: Digest, layer_size: int) -> dict[str, object]:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(config), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(layer), "size": layer_size}],
    }


class TestFakeUpstream(UpstreamContract):
    @pytest.fixture
    def content(self) -> SeededImage:
        fake = FakeUpstream()
        layer = bytes(range(256)) * 5000
        document = image_document(fake.add_blob(REPOSITORY, b"{}"), fake.add_blob(REPOSITORY, layer), len(layer))
        for tag in TAGS:
            digest = fake.add_manifest(REPOSITORY, document, tag)
        fake.referrers_api = self.has_referrers_api
        referrer = fake.add_referrer(REPOSITORY, digest, SIGNATURE, b"signed")
        self.fake = fake
        return SeededImage(REPOSITORY, TAGS, digest, fake.manifests[str(digest)][0], Digest.of(layer), layer, referrer)

    @pytest.fixture
    def upstream(self, content: SeededImage) -> FakeUpstream:
        return self.fake


class TestFakeUpstreamWithTheReferrersAPI(TestFakeUpstream):
    has_referrers_api = True


def push_with_the_registry_api(base: str, content_blobs: list[bytes], manifest: bytes, tags: tuple[str, ...]) -> None:
    with httpx.Client(base_url=base) as http:
        for data in content_blobs:
            push_blob(http, REPOSITORY, data)
        for tag in tags:
            push_manifest(http, REPOSITORY, tag, manifest, OCI_MANIFEST)


class TestHttpUpstreamAgainstDistribution(UpstreamContract):
    @pytest.fixture(scope="class")
    @classmethod
    def registry(cls, tmp_path_factory: pytest.TempPathFactory):
        with DistributionRegistry(tmp_path_factory.mktemp("upstream")) as registry:
            yield registry

    @pytest.fixture(scope="class")
    @classmethod
    def content(cls, registry: DistributionRegistry) -> SeededImage:
        layer = bytes(range(256)) * 20_000  # 5 MB: several chunks
        manifest = json.dumps(image_document(Digest.of(b"{}"), Digest.of(layer), len(layer))).encode()
        push_with_the_registry_api(registry.url, [b"{}", layer], manifest, TAGS)
        referrer = push_referrer(registry.url, REPOSITORY, Digest.of(manifest), SIGNATURE, b"signed")
        return SeededImage(REPOSITORY, TAGS, Digest.of(manifest), manifest, Digest.of(layer), layer, referrer)

    @pytest.fixture
    def upstream(self, registry: DistributionRegistry):
        return HttpUpstreams(addresses=LOOPBACK_ALLOWED).for_rule(Rule("up", registry.url))

    def test_one_request_per_call_against_an_open_registry(self, upstream, content, registry):
        mark = registry.mark()
        upstream.head_manifest(content.repository, content.tags[0])
        with upstream.open_blob(content.repository, content.blob) as blob:
            b"".join(blob.chunks)
        assert [(entry.method, entry.status) for entry in registry.requests_since(mark)] == [
            ("HEAD", 200),
            ("GET", 200),
        ]


def test_unreachable_upstream_is_unavailable_quickly(tmp_path: Path):
    import time

    from core.errors import Unavailable
    from tests.support.ports import free_port

    upstream = HttpUpstreams(addresses=LOOPBACK_ALLOWED).for_rule(Rule("up", f"http://127.0.0.1:{free_port()}"))
    started = time.monotonic()
    with pytest.raises(Unavailable):
        upstream.get_manifest("library/x", "v1")
    assert time.monotonic() - started < 2
