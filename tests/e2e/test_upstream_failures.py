"""What clients see when the upstream is down, throttling, or sending corrupt bytes, and when a client leaves
halfway: cached content keeps flowing, nothing unverified is ever stored, errors are fast and in OCI form."""

from __future__ import annotations

import http.server
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.breaker import FAILURE_THRESHOLD
from tests.support.clients import skopeo_copy, verify_dir_digests
from tests.support.images import TestImage, push_test_images
from tests.support.ports import free_port
from tests.support.proc import CommandError
from tests.support.pullthrough import PullthroughServer
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e

PREFIX = "up"
ACCEPT_ALL = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json",
])  # fmt: skip


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributionRegistry]:
    """A registry of this module's own: these tests stop it and corrupt its storage."""
    with DistributionRegistry(tmp_path_factory.mktemp("failing-upstream")) as registry:
        yield registry


@pytest.fixture(scope="module")
def images(upstream: DistributionRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestImage]:
    return push_test_images(upstream.host, tmp_path_factory.mktemp("images"), big_layer_mib=16)


def serve(tmp_path: Path, upstream_url: str, ttl: int = 3600) -> PullthroughServer:
    return PullthroughServer(
        tmp_path / "pullthrough", [{"prefix": PREFIX, "upstream": upstream_url, "tag_ttl_seconds": ttl}]
    )


def error_code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["code"]


def test_upstream_down_cached_content_still_pulls_and_the_rest_fails_fast(tmp_path, upstream, images):
    single, other = images["single-oci"], images["multi-oci"]
    with serve(tmp_path, upstream.url, ttl=1) as cache:
        skopeo_copy(single.ref(cache.host, PREFIX), tmp_path / "cold")
        upstream.stop()
        try:
            time.sleep(1.1)  # the tag is now stale: revalidation fails and the cached copy is served
            for ref in (single.ref(cache.host, PREFIX), single.ref_by_digest(cache.host, PREFIX)):
                out = tmp_path / f"warm-{len(list(tmp_path.iterdir()))}"
                skopeo_copy(ref, out)
                assert verify_dir_digests(out) == single.blob_digests

            with httpx.Client(base_url=cache.url, timeout=10) as client:
                stale = client.get(
                    f"/v2/{PREFIX}/{single.repository}/manifests/{single.tag}", headers={"Accept": ACCEPT_ALL}
                )
                assert stale.status_code == 200 and "upstream failed" in stale.headers["warning"]
                tags = client.get(f"/v2/{PREFIX}/{single.repository}/tags/list")
                assert tags.status_code == 200 and tags.json()["tags"] == [single.tag]

                started = time.monotonic()
                for path in (f"manifests/{other.tag}", f"manifests/{other.digest}", f"blobs/{other.largest_blob}"):
                    response = client.get(f"/v2/{PREFIX}/{other.repository}/{path}", headers={"Accept": ACCEPT_ALL})
                    assert response.status_code == 503 and error_code(response) == "UNAVAILABLE"
                    assert response.headers["retry-after"]
                assert time.monotonic() - started < 3
        finally:
            upstream.start()


def blob_data_file(upstream: DistributionRegistry, digest: str) -> Path:
    encoded = digest.split(":", 1)[1]
    return upstream.workdir / "storage" / "docker/registry/v2/blobs/sha256" / encoded[:2] / encoded / "data"


def test_corrupt_upstream_blob_is_never_cached_or_served_whole(tmp_path, upstream, images):
    image = images["big"]
    stored = blob_data_file(upstream, image.largest_blob)
    original = tmp_path / "original"
    shutil.copyfile(stored, original)
    size = stored.stat().st_size
    with stored.open("r+b") as data:  # same length, one byte changed in the middle
        data.seek(size // 2)
        byte = data.read(1)
        data.seek(size // 2)
        data.write(bytes([byte[0] ^ 0xFF]))
    try:
        with serve(tmp_path, upstream.url) as cache:
            with pytest.raises(CommandError, match=r"(?i)digest|unexpected EOF|connection reset"):
                skopeo_copy(image.ref(cache.host, PREFIX), tmp_path / "corrupt")
            # the last byte is held back until the digest verifies, then the connection is aborted;
            # how much arrives before that depends on timing, but never the whole blob
            with (
                httpx.Client(base_url=cache.url, timeout=30) as client,
                pytest.raises(httpx.RemoteProtocolError) as aborted,
            ):
                client.get(f"/v2/{PREFIX}/{image.repository}/blobs/{image.largest_blob}")
            received = re.search(r"received (\d+) bytes, expected (\d+)", str(aborted.value))
            assert received is not None, aborted.value
            assert int(received[2]) == size
            assert int(received[1]) < size
            cached = list((cache.data_dir / "blobs").rglob(image.largest_blob.split(":")[1]))
            assert cached == []
            assert list((cache.data_dir / "tmp").iterdir()) == []

            shutil.copyfile(original, stored)
            skopeo_copy(image.ref(cache.host, PREFIX), tmp_path / "repaired")
            assert verify_dir_digests(tmp_path / "repaired") == image.blob_digests
    finally:
        shutil.copyfile(original, stored)


def test_client_leaving_mid_blob_leaves_a_complete_blob_or_none(tmp_path, upstream, images):
    image = images["big"]
    with serve(tmp_path, upstream.url) as cache:
        path = f"/v2/{PREFIX}/{image.repository}/blobs/{image.largest_blob}"
        with socket.create_connection(("127.0.0.1", cache.port)) as raw:
            raw.sendall(f"GET {path} HTTP/1.1\r\nHost: {cache.host}\r\n\r\n".encode())
            assert raw.recv(65536).startswith(b"HTTP/1.1 200")
        # the download goes on without the client, and the blob lands verified
        deadline = time.monotonic() + 30
        blob_file = cache.data_dir / "blobs" / "sha256" / image.largest_blob[7:9] / image.largest_blob[7:]
        while not blob_file.exists():
            assert time.monotonic() < deadline, "the fill did not complete after the client left"
            time.sleep(0.05)
        mark = upstream.mark()
        skopeo_copy(image.ref(cache.host, PREFIX), tmp_path / "after")
        fetched = [entry.path for entry in upstream.requests_since(mark) if "/blobs/" in entry.path]
        assert image.largest_blob not in " ".join(fetched)
        assert list((cache.data_dir / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "path, status, code",
    [
        ("/v2/up/UPPER/manifests/v1", 400, "NAME_INVALID"),
        ("/v2/up/library/x/manifests/sha256:short", 400, "DIGEST_INVALID"),
        ("/v2/up/library/x/blobs/sha1:" + "a" * 40, 400, "DIGEST_INVALID"),
        ("/v2/up/library/x/manifests/" + "t" * 200, 404, "MANIFEST_UNKNOWN"),
        ("/v2/up/" + "a/" * 200 + "x/manifests/v1", 400, "NAME_INVALID"),
        ("/v2/elsewhere/x/manifests/v1", 404, "NAME_UNKNOWN"),
    ],
)
def test_malformed_requests_get_oci_errors_from_the_real_server(tmp_path, upstream, path, status, code):
    with serve(tmp_path, upstream.url) as cache, httpx.Client(base_url=cache.url) as client:
        response = client.get(path)
        assert response.status_code == status and error_code(response) == code
        assert client.get("/v2/").status_code == 200


class _CountingUpstream(http.server.BaseHTTPRequestHandler):
    """An upstream that throttles (429) or answers too slowly, and counts how often it is asked."""

    mode = "throttle"
    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        if self.mode == "slow":
            time.sleep(3)
        self.send_response(429)
        self.send_header("Retry-After", "30")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("mode, status", [("throttle", 429), ("slow", 503)])
def test_a_failing_upstream_is_not_asked_again_in_a_loop(tmp_path, mode, status):
    _CountingUpstream.mode, _CountingUpstream.requests = mode, 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _CountingUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rules = [{"prefix": PREFIX, "upstream": f"http://127.0.0.1:{server.server_address[1]}"}]
    cache = PullthroughServer(tmp_path / "pullthrough", rules, extra_args=("--upstream-timeout", "1", "--workers", "2"))
    try:
        with cache, httpx.Client(base_url=cache.url, timeout=10) as client:
            started = time.monotonic()
            answers = [client.get(f"/v2/{PREFIX}/library/x/manifests/v{n}") for n in range(10)]
            assert [answer.status_code for answer in answers] == [status] * 10
            codes = {answer.json()["errors"][0]["code"] for answer in answers}
            assert codes == {"TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"}
            if mode == "throttle":  # the upstream's Retry-After, counting down
                assert answers[0].headers["retry-after"] == "30"
                assert all(0 < int(answer.headers["retry-after"]) <= 30 for answer in answers)
            blob = client.get(f"/v2/{PREFIX}/library/x/blobs/sha256:{'a' * 64}")
            assert blob.status_code == status  # blobs too, from the same back-off
            assert time.monotonic() - started < 5  # one slow answer at most, then straight from the back-off
        # ten requests, two server processes: the upstream was asked until its failures were a pattern, no more
        assert _CountingUpstream.requests == FAILURE_THRESHOLD
    finally:
        server.shutdown()
