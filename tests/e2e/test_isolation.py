"""Cached content never crosses a boundary: not between repositories (pull keys are scoped by name), not between
rules (their upstreams and credentials differ), not between writers of one data directory; and a Range is only ever
answered in full from verified bytes. Against real upstream registries, through `serve` and the Lambda path."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.e2e.conftest import AWS
from tests.support.clients import skopeo, verify_dir_digests
from tests.support.faulty import FaultyUpstream
from tests.support.images import TestImage, make_big_blob_image
from tests.support.moto import MotoServer
from tests.support.pullthrough import PullthroughServer, pullthrough_cli
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def secret_image(upstream_registry: DistributionRegistry, tmp_path_factory: pytest.TempPathFactory) -> TestImage:
    """An image only `secret/app` has upstream: its layer is in no other repository."""
    return make_big_blob_image(upstream_registry.host, tmp_path_factory.mktemp("secret"), 1, "secret/app", "v1")


@pytest.fixture(params=["serve", "lambda"])
def token_cache(request, tmp_path: Path, upstream_registry: DistributionRegistry, moto: MotoServer):
    """A cache in token mode with one rule, `private`, and a function making pull keys for it."""
    rules = [{"prefix": "private", "upstream": upstream_registry.url, "tag_ttl_seconds": 3600}]
    if request.param == "serve":
        server = PullthroughServer(tmp_path / "cache", rules, extra_args=("--auth", "token"))
        key_args, env = ["--data-dir", str(server.data_dir)], {}
    else:
        name = f"iso-{uuid.uuid4().hex[:12]}"
        env = {**AWS, "AWS_ENDPOINT_URL": moto.url}
        args = ("--lambda", "--auth", "token", "--table", name, "--bucket", name)
        server = PullthroughServer(tmp_path / "lambda", rules, extra_args=args, env=env)
        key_args = ["--table", name]

    def make_key(name: str, prefix: str) -> str:
        done = pullthrough_cli("keys", "create", name, "--prefix", prefix, *key_args, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    with server:
        yield server, make_key


def token(server: PullthroughServer, key: str, secret: str, repository: str) -> dict[str, str]:
    answer = httpx.get(f"{server.url}/token", params={"scope": f"repository:{repository}:pull"}, auth=(key, secret))
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def test_a_key_for_one_repository_cannot_read_by_digest_what_only_another_pulled(
    token_cache, secret_image: TestImage, upstream_registry: DistributionRegistry, tmp_path: Path
):
    server, make_key = token_cache
    secret = make_key("secret", "private/secret")
    team = make_key("team", "private/team-a")  # the README's sub-rule prefixes
    skopeo("copy", "--src-tls-verify=false", "--src-creds", f"secret:{secret}",
           f"docker://{secret_image.ref(server.host, 'private')}", f"dir:{tmp_path / 'pulled'}")  # fmt: skip
    assert verify_dir_digests(tmp_path / "pulled") == secret_image.blob_digests

    headers = token(server, "team", team, "private/team-a/app")
    mark = upstream_registry.mark()
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for method in ("GET", "HEAD"):
            blob = client.request(method, f"/v2/private/team-a/app/blobs/{secret_image.largest_blob}")
            assert blob.status_code == 404, (method, blob.status_code)
            manifest = client.request(method, f"/v2/private/team-a/app/manifests/{secret_image.digest}")
            assert manifest.status_code == 404, (method, manifest.status_code)
        assert client.get(f"/v2/private/team-a/app/blobs/{secret_image.largest_blob}").json()["errors"][0]["code"] == (
            "BLOB_UNKNOWN"
        )
    asked = {(entry.method, entry.path) for entry in upstream_registry.requests_since(mark)}
    # team-a's own upstream was asked, and said no; nothing of secret/app's bytes went to team-a
    assert ("HEAD", f"/v2/team-a/app/blobs/{secret_image.largest_blob}") in asked
    assert ("HEAD", f"/v2/team-a/app/manifests/{secret_image.digest}") in asked


@pytest.fixture
def two_upstreams(tmp_path: Path, upstream_registry: DistributionRegistry, test_images) -> Iterator[tuple]:
    """Rules `private` (a registry with credentials that has the big image, its bodies slowed down so that a fill
    lasts a few seconds) and `public` (a registry in front of which blob requests end in 404)."""
    image: TestImage = test_images["big"]
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"puller:{bcrypt.hashpw(b'pw', bcrypt.gensalt(rounds=4)).decode()}\n")
    with DistributionRegistry(tmp_path / "private", htpasswd=htpasswd) as private:
        skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds",
               "puller:pw", f"docker://{image.ref(upstream_registry.host)}",
               f"docker://{private.host}/{image.repository}:{image.tag}")  # fmt: skip
        with FaultyUpstream(private.url) as slow_private, FaultyUpstream(upstream_registry.url) as public:
            slow_private.faults.slow_body_paths = "/blobs/"
            slow_private.faults.slow_body_seconds = 0.004
            rules = [
                {"prefix": "private", "upstream": slow_private.url, "credentials": "env:PRIV"},
                {"prefix": "public", "upstream": public.url},
            ]
            yield rules, {"PRIV_USERNAME": "puller", "PRIV_PASSWORD": "pw"}, image, public


def test_a_client_of_one_rule_never_gets_another_rules_fill(tmp_path: Path, two_upstreams):
    rules, env, image, public = two_upstreams
    public.faults.canned[f"/v2/{image.repository}/blobs/{image.largest_blob}"] = (404, {}, b"")
    path = f"/v2/{{}}/{image.repository}/blobs/{image.largest_blob}"
    with (
        PullthroughServer(tmp_path / "cache", rules, env=env) as cache,
        httpx.Client(base_url=cache.url, timeout=60) as client,
    ):
        private_bytes: list[bytes] = []
        filling = threading.Thread(target=lambda: private_bytes.append(client.get(path.format("private")).content))
        filling.start()
        try:
            for headers in ({}, {"Range": "bytes=0-99"}):  # while the private fill runs
                answer = client.get(path.format("public"), headers=headers)
                assert answer.status_code == 404 and answer.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        finally:
            filling.join()
        assert hashlib.sha256(private_bytes[0]).hexdigest() == image.largest_blob.split(":")[1]


def test_a_client_of_one_rule_never_joins_another_rules_failing_fill(tmp_path: Path, two_upstreams):
    rules, env, image, public = two_upstreams
    public.faults.hang_paths = "/blobs/"  # the public fill waits, then fails
    path = f"/v2/{{}}/{image.repository}/blobs/{image.largest_blob}"
    with (
        PullthroughServer(tmp_path / "cache", rules, env=env) as cache,
        httpx.Client(base_url=cache.url, timeout=60) as client,
    ):
        hanging = threading.Thread(target=lambda: client.get(path.format("public")))
        hanging.start()
        deadline = time.monotonic() + 10
        while public.count("GET", "/blobs/") == 0:  # the public fill is under way, waiting on its upstream
            assert time.monotonic() < deadline
            time.sleep(0.01)
        try:
            private = client.get(path.format("private"))
            assert private.status_code == 200
            assert hashlib.sha256(private.content).hexdigest() == image.largest_blob.split(":")[1]
        finally:
            public.release()
            hanging.join()


def test_two_servers_filling_one_digest_through_two_rules_store_only_verified_bytes(
    tmp_path: Path, upstream_registry: DistributionRegistry, test_images
):
    """The built-in docker-hub/ and root rules both point at Docker Hub; two server processes on one data directory
    fill one digest through both at once. The stored blob must hash to its name."""
    image: TestImage = test_images["big"]
    with FaultyUpstream(upstream_registry.url) as slow:
        slow.faults.slow_body_paths = "/blobs/"
        slow.faults.slow_body_seconds = 0.005
        rules = [{"prefix": "a", "upstream": slow.url}, {"prefix": "b", "upstream": slow.url}]
        with PullthroughServer(tmp_path / "first", rules) as first:
            second = PullthroughServer(tmp_path / "second", rules)
            second.data_dir = first.data_dir  # one data directory, two processes
            with second:
                answers: dict[str, bytes] = {}

                def fetch(server: PullthroughServer, prefix: str) -> None:
                    response = httpx.get(f"{server.url}/v2/{prefix}/{image.repository}/blobs/{image.largest_blob}",
                                         timeout=120)  # fmt: skip
                    answers[prefix] = response.content

                first_fill = threading.Thread(target=fetch, args=(first, "a"))
                first_fill.start()
                # the second starts once the first is well past half-way: a shared temp file would then be
                # truncated under the first writer, which finishes first and leaves a hole of zeros behind
                _wait_for_temp_file(first.data_dir / "tmp", at_least=int(image.blob_bytes * 0.6))
                second_fill = threading.Thread(target=fetch, args=(second, "b"))
                second_fill.start()
                first_fill.join()
                second_fill.join()
        encoded = image.largest_blob.split(":")[1]
        assert {prefix: hashlib.sha256(data).hexdigest() for prefix, data in answers.items()} == {
            "a": encoded,
            "b": encoded,
        }
        stored = first.data_dir / "blobs" / "sha256" / encoded[:2] / encoded
        with stored.open("rb") as blob:
            assert hashlib.file_digest(blob, "sha256").hexdigest() == encoded
        assert slow.count("GET", "/blobs/") == 2  # one fill per rule: neither joined the other
        assert [path.name for path in (first.data_dir / "tmp").iterdir()] == []


def _wait_for_temp_file(directory: Path, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while not any(path.stat().st_size >= at_least for path in directory.glob("*") if path.is_file()):
        assert time.monotonic() < deadline, "the first fill never got that far"
        time.sleep(0.01)


def test_a_range_of_a_fill_in_flight_is_never_answered_whole_from_unverified_bytes(tmp_path: Path):
    with DistributionRegistry(
        tmp_path / "upstream"
    ) as upstream:  # its storage is corrupted below: a registry of its own
        image = make_big_blob_image(upstream.host, tmp_path / "image", 8, "library/ranged", "v1")
        encoded = image.largest_blob.split(":")[1]
        stored = upstream.workdir / "storage/docker/registry/v2/blobs/sha256" / encoded[:2] / encoded / "data"
        with stored.open("r+b") as data:  # the last byte changed: every range before it reads the upstream's bytes
            data.seek(-1, 2)
            last = data.read(1)
            data.seek(-1, 2)
            data.write(bytes([last[0] ^ 0xFF]))
        with FaultyUpstream(upstream.url) as slow:
            slow.faults.slow_body_paths = "/blobs/"
            slow.faults.slow_body_seconds = 0.02
            with PullthroughServer(tmp_path / "cache", [{"prefix": "up", "upstream": slow.url}]) as cache:
                url = f"{cache.url}/v2/up/{image.repository}/blobs/{image.largest_blob}"
                received: list[int | AssertionError] = []

                def read_whole() -> None:
                    try:
                        received.append(_read_aborted(url, {}))
                    except AssertionError as exc:
                        received.append(exc)

                whole = threading.Thread(target=read_whole)
                whole.start()
                # ranges well before the end, asked while the fill is in flight
                assert _read_aborted(url, {"Range": "bytes=0-999"}) < 1000
                assert _read_aborted(url, {"Range": "bytes=4096-8191"}) < 4096
                whole.join()
                assert isinstance(received[0], int) and received[0] < stored.stat().st_size
                assert not (cache.data_dir / "blobs" / "sha256" / encoded[:2] / encoded).exists()


def _read_aborted(url: str, headers: dict[str, str]) -> int:
    """How many bytes arrived before the server cut the response off; AssertionError if it completed."""
    received = 0
    try:
        with httpx.stream("GET", url, headers=headers, timeout=120) as response:
            for chunk in response.iter_bytes():
                received += len(chunk)
    except httpx.RemoteProtocolError:
        return received
    raise AssertionError(f"the response completed with {received} bytes that never verified")
