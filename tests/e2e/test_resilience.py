"""One bad upstream answer darkens nothing, one slow upstream stalls nothing, no upstream fills the disk, slow
clients starve no one, and no client makes the cache hammer an upstream: against real and fault-injecting
upstreams, with real clients."""

from __future__ import annotations

import hashlib
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.breaker import FAILURE_THRESHOLD
from tests.support.clients import skopeo_copy, verify_dir_digests
from tests.support.faulty import FaultyUpstream
from tests.support.images import TestImage
from tests.support.pullthrough import PullthroughServer
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e


@pytest.fixture
def faulty(upstream_registry: DistributionRegistry, test_images) -> Iterator[FaultyUpstream]:
    with FaultyUpstream(upstream_registry.url) as upstream:
        yield upstream


def serve(workdir: Path, *upstreams: tuple[str, str], args: tuple[str, ...] = (), **kwargs) -> PullthroughServer:
    rules = [{"prefix": prefix, "upstream": url, "tag_ttl_seconds": 3600} for prefix, url in upstreams]
    return PullthroughServer(workdir, rules, extra_args=args, **kwargs)


def test_one_failing_name_darkens_nothing(tmp_path: Path, faulty: FaultyUpstream, test_images):
    """A 500 for one (over-long) name, several times over: that name fails, every other pull goes on."""
    image: TestImage = test_images["single-oci"]
    bad_name = "library/" + "x" * 200
    faulty.faults.error_paths = f"/v2/{bad_name}/"
    with serve(tmp_path / "cache", ("up", faulty.url)) as cache, httpx.Client(base_url=cache.url) as client:
        for _ in range(FAILURE_THRESHOLD + 2):
            failed = client.get(f"/v2/up/{bad_name}/manifests/v1")
            assert failed.status_code == 503 and failed.json()["errors"][0]["code"] == "UNAVAILABLE"
        skopeo_copy(image.ref(cache.host, "up"), tmp_path / "pulled")
        assert verify_dir_digests(tmp_path / "pulled") == image.blob_digests


@pytest.mark.slow
def test_pulls_through_an_upstream_that_cuts_every_blob_and_refuses_a_fifth_of_requests(
    tmp_path: Path, faulty: FaultyUpstream, test_images
):
    """The acceptance figure: 20 cold pulls of the big image, each blob cut once mid-download, 20% of requests
    answered 503; every pull completes with the right digests (retries and Range resumes, all verified)."""
    image: TestImage = test_images["big"]
    faulty.faults.cut_blobs_once = True
    faulty.faults.unavailable_every = 5
    times = []
    for attempt in range(20):
        faulty.forget_cuts()  # every pull meets the cuts afresh
        ranges_before = len(faulty.ranges)
        with serve(tmp_path / f"cache-{attempt}", ("up", faulty.url)) as cache:
            started = time.monotonic()
            skopeo_copy(image.ref(cache.host, "up"), tmp_path / f"pull-{attempt}")
            times.append(time.monotonic() - started)
        assert verify_dir_digests(tmp_path / f"pull-{attempt}") == image.blob_digests
        resumed = len(faulty.ranges) - ranges_before
        assert resumed >= len(image.blob_digests)  # every blob resumed where it was cut
    print(f"\n20 pulls, every blob cut once, 20% 503: {min(times):.2f}-{max(times):.2f} s each")


def test_a_hanging_upstream_stalls_nothing_else(tmp_path: Path, faulty: FaultyUpstream, upstream_registry, test_images):
    """45 requests hang on one upstream; /v2/, a cached blob and a cold pull from another upstream are served as
    fast as ever."""
    cached: TestImage = test_images["single-oci"]
    cold: TestImage = test_images["multi-oci"]
    faulty.faults.hang_paths = "."
    upstreams = (("up", upstream_registry.url), ("hanging", faulty.url))
    with serve(tmp_path / "cache", *upstreams, args=("--upstream-timeout", "120")) as cache:
        skopeo_copy(cached.ref(cache.host, "up"), tmp_path / "warm-up")
        hanging = [
            threading.Thread(target=httpx.get, args=(f"{cache.url}/v2/hanging/library/x/blobs/sha256:{n:064x}",),
                             kwargs={"timeout": 120})
            for n in range(45)
        ]  # fmt: skip
        try:
            for thread in hanging:
                thread.start()
            deadline = time.monotonic() + 10
            while faulty.count("GET", "/blobs/") < 16:  # the hanging upstream's lane is full
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with httpx.Client(base_url=cache.url, timeout=30) as client:
                started = time.monotonic()
                with client.stream("GET", f"/v2/up/{cached.repository}/blobs/{cached.largest_blob}") as response:
                    next(response.iter_bytes())
                    first_byte = time.monotonic() - started
                ping_started = time.monotonic()
                assert client.get("/v2/").status_code == 200
                ping = time.monotonic() - ping_started
            started = time.monotonic()
            skopeo_copy(cold.ref(cache.host, "up"), tmp_path / "cold")
            cold_pull = time.monotonic() - started
            assert verify_dir_digests(tmp_path / "cold") <= cold.blob_digests
        finally:
            faulty.release()
            for thread in hanging:
                thread.join()
    print(f"\nwith 45 requests hanging: cached blob first byte {first_byte * 1000:.1f} ms, /v2/ {ping * 1000:.1f} ms,"
          f" cold pull from another upstream {cold_pull:.2f} s")  # fmt: skip
    assert first_byte < 1.0 and ping < 1.0 and cold_pull < 15


def test_a_drip_feeding_upstream_is_noticed_and_left_alone(tmp_path: Path, faulty: FaultyUpstream, test_images):
    """One byte a second never trips a read timeout; the lack of progress does, and after a few such downloads the
    upstream is left alone."""
    image: TestImage = test_images["multi-oci"]
    faulty.faults.drip_paths = "/blobs/"
    faulty.faults.drip_seconds = 0.5
    blobs = sorted(image.blob_digests)[:FAILURE_THRESHOLD]
    with serve(tmp_path / "cache", ("up", faulty.url), args=("--upstream-timeout", "1")) as cache:
        answers: list[int] = []

        def fetch(digest: str) -> None:
            try:
                response = httpx.get(f"{cache.url}/v2/up/{image.repository}/blobs/{digest}", timeout=60)
                answers.append(response.status_code)
            except httpx.HTTPError:  # the body was cut short: what a stalled download looks like to a client
                answers.append(0)

        threads = [threading.Thread(target=fetch, args=(digest,)) for digest in blobs]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert time.monotonic() - started < 30
        assert len(answers) == len(blobs) and 200 not in answers
        asked = faulty.count("GET", "/blobs/")
        refused = httpx.get(f"{cache.url}/v2/up/{image.repository}/blobs/sha256:{'e' * 64}")
        assert refused.status_code == 503 and "not asking" in refused.json()["errors"][0]["message"]
        assert faulty.count("GET", "/blobs/") == asked


def test_no_upstream_body_can_fill_the_disk(tmp_path: Path, faulty: FaultyUpstream, test_images):
    image: TestImage = test_images["single-oci"]
    huge = f"{image.repository}/blobs/sha256:{'1' * 64}"
    faulty.faults.canned[f"/v2/{huge}"] = (200, {"Content-Length": str(10 << 40)}, b"\0" * 1000)  # "10 TiB"
    faulty.faults.endless_paths = f"/v2/{image.repository}/blobs/sha256:2+$"
    rules = [{"prefix": "up", "upstream": faulty.url, "max_blob_bytes": 8 << 20}]
    with PullthroughServer(tmp_path / "cache", rules) as cache, httpx.Client(base_url=cache.url, timeout=60) as client:
        started = time.monotonic()
        over_the_maximum = client.get(f"/v2/up/{huge}")
        assert over_the_maximum.status_code == 403 and "max_blob_bytes" in over_the_maximum.text
        endless = client.get(f"/v2/up/{image.repository}/blobs/sha256:{'2' * 64}")
        assert endless.status_code == 403 and "max_blob_bytes" in endless.text
        assert time.monotonic() - started < 20
        assert list((cache.data_dir / "tmp").iterdir()) == []
    unlimited = [{"prefix": "up", "upstream": faulty.url, "max_blob_bytes": 1 << 50}]  # the free disk space decides
    with PullthroughServer(tmp_path / "unlimited", unlimited) as cache:
        no_room = httpx.get(f"{cache.url}/v2/up/{huge}", timeout=30)
        assert no_room.status_code == 503 and "disk space" in no_room.text
        assert list((cache.data_dir / "tmp").iterdir()) == []


def test_a_thousand_slow_clients_do_not_stop_a_real_pull(tmp_path: Path, upstream_registry, test_images):
    """1,100 connections that never finish their headers, against a server started with the usual 1,024 open
    files: it raises its limit, times out slow headers and drops the longest-waiting connections first."""
    image: TestImage = test_images["single-oci"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))  # the test's own end of 1,100 sockets
    with serve(tmp_path / "cache", ("up", upstream_registry.url), open_files=1024) as cache:
        slow = []
        for _ in range(1100):
            connection = socket.create_connection(("127.0.0.1", cache.port))
            connection.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(connection)
        try:
            started = time.monotonic()
            skopeo_copy(image.ref(cache.host, "up"), tmp_path / "pulled", timeout=60)
            elapsed = time.monotonic() - started
            assert verify_dir_digests(tmp_path / "pulled") == image.blob_digests
        finally:
            for connection in slow:
                connection.close()
    print(f"\na cold pull with 1,100 slow-header connections open: {elapsed:.2f} s")
    assert elapsed < 15


def test_missing_names_cost_the_upstream_one_request_and_each_client_has_a_budget(
    tmp_path: Path, upstream_registry: DistributionRegistry, test_images
):
    image: TestImage = test_images["single-oci"]
    budget = ("--miss-budget", "8")
    with (
        serve(tmp_path / "cache", ("up", upstream_registry.url), args=budget) as cache,
        httpx.Client(base_url=cache.url, timeout=30) as client,
    ):
        mark = upstream_registry.mark()
        for _ in range(5):  # the same missing tag, in a loop
            assert client.get(f"/v2/up/{image.repository}/manifests/no-such-tag").status_code == 404
        asked = [entry for entry in upstream_registry.requests_since(mark) if "no-such-tag" in entry.path]
        assert len(asked) == 1
        assert client.get(f"/v2/up/{image.repository}/manifests/{image.tag}").status_code == 200  # miss 6
        for n in range(2):  # random digests: misses 7 and 8
            assert client.get(f"/v2/up/{image.repository}/blobs/sha256:{n:064x}").status_code == 404
        over = client.get(f"/v2/up/{image.repository}/blobs/sha256:{9:064x}")
        assert over.status_code == 429 and over.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert 0 < int(over.headers["retry-after"]) <= 2 * 60  # may reach into the next minute
        for _ in range(20):  # cached: never limited
            assert client.get(f"/v2/up/{image.repository}/manifests/{image.tag}").status_code == 200


@pytest.mark.parametrize("workers", [1, 2])
def test_a_server_stopped_mid_download_finishes_it_before_exiting(
    tmp_path: Path, faulty: FaultyUpstream, test_images, workers: int
):
    """SIGTERM while a blob downloads, its client gone: the server stores the verified blob and leaves no partial
    file behind, instead of dying mid-way and downloading it all again after the restart."""
    image: TestImage = test_images["big"]
    faulty.faults.slow_body_paths = "/blobs/"
    faulty.faults.slow_body_seconds = 0.002  # 64 KiB pieces: 64 MiB take a few seconds
    blob_path = f"/v2/up/{image.repository}/blobs/{image.largest_blob}"
    cache = serve(tmp_path / "cache", ("up", faulty.url), workers=workers)
    with cache:
        with httpx.stream("GET", cache.url + blob_path) as response:
            next(response.iter_raw())  # under way; the client leaves
        cache.stop()  # SIGTERM; SIGKILL after 10 s
        assert list((cache.data_dir / "tmp").iterdir()) == []
        cache.start()
        assert hashlib.sha256(httpx.get(cache.url + blob_path).content).hexdigest() == image.largest_blob[7:]
    assert faulty.count("GET", "/blobs/") == 1
