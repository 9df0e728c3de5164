"""The deployed code path, run here: `pullthrough serve --lambda` turns requests into API Gateway events for the
real Lambda handler, with S3 and DynamoDB in moto (server mode). Real clients pull every test image through it from
the real upstream; blob bytes reach them from the S3 endpoint through the 307."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import IMAGES, PREFIX, cache_rules, fetches, lambda_server, platforms
from tests.support.images import TestImage
from tests.support.moto import MotoServer
from tests.support.pullthrough import PullthroughServer
from tests.support.upstream import DistributionRegistry, summarize

pytestmark = pytest.mark.e2e


@pytest.fixture
def lambda_cache(
    tmp_path: Path, moto: MotoServer, upstream_registry: DistributionRegistry
) -> Iterator[PullthroughServer]:
    with lambda_server(tmp_path / "lambda", moto, cache_rules(upstream_registry), sync_max=256 << 20) as server:
        yield server


@pytest.mark.parametrize("key", IMAGES)
def test_real_clients_pull_through_the_lambda_handler(
    key: str, puller, lambda_cache: PullthroughServer, moto: MotoServer, upstream_registry, test_images
):
    image: TestImage = test_images[key]
    s3_before = len(moto.requests())
    mark = upstream_registry.mark()
    for arch, variant in platforms(image):
        puller.pull(image.ref(lambda_cache.host, PREFIX), arch, variant, image)
    cold = upstream_registry.requests_since(mark)
    assert all(count == 1 for count in fetches(cold).values()), fetches(cold)
    assert set(image.blob_digests) <= set(fetches(cold))
    assert summarize(cold)[1] <= image.blob_bytes + 64 * 1024

    # blob bytes came from S3 through the redirect, not through the handler
    served_by_s3 = Counter(
        path.rsplit("/", 1)[1] for method, path, status in moto.requests()[s3_before:]
        if method == "GET" and status in (200, 206) and "/blobs/sha256/" in path
    )  # fmt: skip
    assert {digest.split(":")[1] for digest in image.blob_digests} <= set(served_by_s3)

    mark = upstream_registry.mark()
    for arch, variant in platforms(image):
        puller.pull(image.ref(lambda_cache.host, PREFIX), arch, variant, image)
        puller.pull(image.ref_by_digest(lambda_cache.host, PREFIX), arch, variant, image)
    assert upstream_registry.requests_since(mark) == []


def test_head_requests_on_the_lambda_path(lambda_cache: PullthroughServer, test_images):
    image: TestImage = test_images["single-oci"]
    base = f"{lambda_cache.url}/v2/{PREFIX}/{image.repository}"
    with httpx.Client(timeout=30) as client:
        get = client.get(f"{base}/manifests/{image.tag}", headers={"Accept": image.media_type})
        head = client.head(f"{base}/manifests/{image.tag}", headers={"Accept": image.media_type})
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(get.content))
        assert head.headers["docker-content-digest"] == image.digest
        client.get(f"{base}/blobs/{image.largest_blob}", follow_redirects=True)
        blob_head = client.head(f"{base}/blobs/{image.largest_blob}")
        assert blob_head.status_code == 307
        assert "X-Amz-Signature" in blob_head.headers["location"]
        followed = client.head(blob_head.headers["location"])  # signed for HEAD, so S3 answers it
        assert followed.status_code == 200 and int(followed.headers["content-length"]) > 0


def test_a_blob_too_big_for_one_request_is_filled_once_by_the_fill_function(
    tmp_path: Path, moto: MotoServer, upstream_registry: DistributionRegistry, test_images, puller
):
    image: TestImage = test_images["big"]
    rules = cache_rules(upstream_registry)
    with lambda_server(tmp_path / "async", moto, rules, sync_max=1 << 20) as cache:
        mark = upstream_registry.mark()
        puller.pull(image.ref(cache.host, PREFIX), "amd64", None, image)  # the request waits for the fill function
        downloads = [e for e in upstream_registry.requests_since(mark) if e.path.endswith(image.largest_blob)]
        # the request that found it too big read only the headers; the fill function did the one real download
        size = httpx.head(f"{upstream_registry.url}/v2/{image.repository}/blobs/{image.largest_blob}").headers[
            "content-length"
        ]
        assert [entry.method for entry in downloads] == ["GET", "GET"]
        # how much the closed GET had in flight is timing; it never came whole, and the fill function's did
        assert downloads[0].bytes < int(size) and downloads[1].bytes == int(size)
        assert f'"UpstreamBytes":[{size}.0]' in cache.log.read_text()  # the fill function's metric
