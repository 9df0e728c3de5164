"""A corpus of hostile requests against the real server in token mode: every one ends in a 4xx (never a 5xx, never a
hang), and the server is healthy afterwards."""

from __future__ import annotations

import base64
import hashlib
import json
import socket

import httpx
import pytest

from core.mediatypes import OCI_INDEX, OCI_MANIFEST
from tests.e2e.conftest import PREFIX, cache_rules
from tests.support.faulty import FaultyUpstream
from tests.support.pullthrough import PullthroughServer, pullthrough_cli
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e

SHA = "sha256:" + "a" * 64


def raw(port: int, request: bytes) -> int:
    """Send bytes as they are (no client library would send these) and return the status code; 0 if the server
    closed the connection without an answer, which counts as refused, not as a failure."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                return 0
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def forge(token: str, **changes: object) -> str:
    header, claims, signature = token.split(".")
    document = json.loads(base64.urlsafe_b64decode(claims + "=="))
    document.update(changes)
    return f"{header}.{base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip('=')}.{signature}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream_registry: DistributionRegistry):
    workdir = tmp_path_factory.mktemp("hostile")
    with PullthroughServer(workdir, cache_rules(upstream_registry), extra_args=("--auth", "token")) as server:
        yield server


@pytest.fixture(scope="module")
def token(server: PullthroughServer) -> str:
    created = pullthrough_cli("keys", "create", "probe", "--prefix", PREFIX, "--data-dir", server.data_dir)
    secret = created.stdout.strip().splitlines()[-1]
    answer = httpx.get(f"{server.url}/token", params={"scope": f"repository:{PREFIX}/library/single-oci:pull"},
                       auth=("probe", secret))  # fmt: skip
    assert answer.status_code == 200
    return str(answer.json()["token"])


def corpus(token: str) -> list[tuple[str, bytes]]:
    good = f"Authorization: Bearer {token}\r\n"
    name = f"{PREFIX}/library/single-oci"

    def get(target: str, headers: str = good, method: str = "GET") -> bytes:
        return f"{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode("latin-1")

    return [
        ("path traversal in the name", get(f"/v2/{PREFIX}/../../etc/passwd/manifests/latest")),
        ("dot segments", get(f"/v2/{PREFIX}/./library/./x/manifests/v1")),
        ("encoded slash", get(f"/v2/{PREFIX}%2Flibrary%2Fsingle-oci/manifests/v1")),
        ("encoded traversal", get(f"/v2/{PREFIX}/%2e%2e/%2e%2e/manifests/v1")),
        ("traversal in a digest", get(f"/v2/{name}/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd")),
        ("wrong digest algorithm", get(f"/v2/{name}/blobs/md5:d41d8cd98f00b204e9800998ecf8427e")),
        ("short digest", get(f"/v2/{name}/manifests/sha256:abc")),
        ("uppercase digest", get(f"/v2/{name}/blobs/sha256:{'A' * 64}")),
        ("null byte", get(f"/v2/{name}/manifests/v1%00")),
        ("huge name", get(f"/v2/{PREFIX}/{'a/' * 2000}x/manifests/v1")),
        ("huge header", get(f"/v2/{name}/manifests/v1", good + f"X-Big: {'b' * 20000}\r\n")),
        ("many headers", get(f"/v2/{name}/manifests/v1", good + "".join(f"X-{i}: v\r\n" for i in range(150)))),
        ("duplicate authorization", get(f"/v2/{name}/manifests/v1", good + good)),
        ("no token", get(f"/v2/{name}/manifests/v1", "")),
        ("basic credentials on a registry route", get(f"/v2/{name}/manifests/v1", "Authorization: Basic YTpi\r\n")),
        ("malformed token", get(f"/v2/{name}/manifests/v1", "Authorization: Bearer not.a.token\r\n")),
        ("empty bearer", get(f"/v2/{name}/manifests/v1", "Authorization: Bearer \r\n")),
        (
            "forged access",
            get(
                f"/v2/{PREFIX}/library/multi-oci/manifests/v1",
                f"Authorization: Bearer {forge(token, access=[f'{PREFIX}/library/multi-oci'])}\r\n",
            ),
        ),
        ("forged expiry", get(f"/v2/{name}/manifests/v1", f"Authorization: Bearer {forge(token, exp=1)}\r\n")),
        ("token for another repository", get(f"/v2/{PREFIX}/library/multi-oci/manifests/v1")),
        ("token endpoint without credentials", get("/token?scope=repository:up/x:pull", "")),
        ("token endpoint with garbage credentials", get("/token", "Authorization: Basic %%%%\r\n")),
        ("push", get(f"/v2/{name}/blobs/uploads/", method="POST")),
        ("delete", get(f"/v2/{name}/manifests/{SHA}", method="DELETE")),
        ("unknown method", get(f"/v2/{name}/manifests/v1", method="PROPFIND")),
        ("range past the end", get(f"/v2/{name}/blobs/{SHA}", good + "Range: bytes=999999999-\r\n")),
        ("bad pagination", get(f"/v2/{name}/tags/list?n=-5")),
        ("a Unicode digit as n", get(f"/v2/{name}/tags/list?n=%C2%B2")),
        ("thousands of digits as n", get(f"/v2/{name}/tags/list?n={'9' * 3000}")),
        ("thousands of digits in a range", get(f"/v2/{name}/blobs/{SHA}", good + f"Range: bytes={'9' * 5000}-\r\n")),
        ("a Latin-1 digit in a range", get(f"/v2/{name}/blobs/{SHA}", good + "Range: bytes=\xb2-\r\n")),
        ("CR LF in ns", get(f"/v2/{name}/manifests/v1?ns=docker.io%0d%0aSet-Cookie:%20a=b")),
        ("a newline after the tag", get(f"/v2/{name}/manifests/v1%0a")),
        ("a newline after the digest", get(f"/v2/{name}/blobs/{SHA}%0a")),
        ("a quote in the name", get(f"/v2/{PREFIX}/a%22b,realm=%22http://evil/manifests/v1", "")),
        ("unknown prefix", get("/v2/nowhere/x/manifests/v1")),
    ]


def test_every_hostile_request_gets_a_4xx_and_the_server_stays_healthy(
    server: PullthroughServer, token: str, test_images
):
    statuses = {label: raw(server.port, request) for label, request in corpus(token)}
    failures = {label: status for label, status in statuses.items() if not (400 <= status < 500 or status == 0)}
    assert failures == {}, statuses
    assert sum(status == 0 for status in statuses.values()) <= 2, statuses  # the server answers nearly all
    assert raw(server.port, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 401
    good = f"GET /v2/{PREFIX}/library/single-oci/manifests/v1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
    assert raw(server.port, (good + "Connection: close\r\n\r\n").encode()) == 200
    assert "Traceback" not in server.log.read_text()


def test_the_token_realm_is_the_servers_own_whatever_host_or_name_a_client_sends(server: PullthroughServer):
    for target, host in [("/v2/", "evil.example"), (f"/v2/{PREFIX}/a%22b,realm=%22http:%2f%2fevil/manifests/v1", "x"),
                         (f'/v2/{PREFIX}/a"b/manifests/v1', "x")]:  # fmt: skip
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        challenges = [line for line in answer.decode("latin-1").split("\r\n") if line.lower().startswith("www-auth")]
        for challenge in challenges:  # a 400 for an unusable name carries none
            assert challenge.count("realm=") == 1 and "evil" not in challenge, challenge
            assert f'realm="{server.url}/token"' in challenge
        assert b"x-content-type-options: nosniff" in answer.lower()


def test_a_hostile_upstreams_manifests_are_refused_not_served(tmp_path, upstream_registry: DistributionRegistry):
    """An upstream whose manifests are HTML, JSON nested 100,000 deep, or an index whose `manifests` is no list."""
    html = b"<html><script>alert(document.cookie)</script></html>"
    nested = b"[" * 100_000 + b"]" * 100_000
    odd_index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": 7}).encode()
    canned = {"html": (html, "text/html"), "nested": (nested, OCI_MANIFEST), "odd-index": (odd_index, OCI_INDEX)}
    with FaultyUpstream(upstream_registry.url) as hostile:
        for name, (body, content_type) in canned.items():
            headers = {
                "Content-Type": content_type,
                "Docker-Content-Digest": f"sha256:{hashlib.sha256(body).hexdigest()}",
            }
            hostile.faults.canned[f"/v2/library/{name}/manifests/v1"] = (200, headers, body)
        with PullthroughServer(tmp_path / "cache", [{"prefix": PREFIX, "upstream": hostile.url}]) as cache:
            with httpx.Client(base_url=cache.url, timeout=30) as client:
                for name in ("html", "nested"):
                    answer = client.get(f"/v2/{PREFIX}/library/{name}/manifests/v1")
                    assert answer.status_code == 502 and answer.json()["errors"][0]["code"] == "MANIFEST_INVALID"
                    assert answer.headers["x-content-type-options"] == "nosniff"
                # an index that lists nothing usable, to a client that takes no indexes: served as it is, no 500
                odd = client.get(f"/v2/{PREFIX}/library/odd-index/manifests/v1", headers={"Accept": OCI_MANIFEST})
                assert odd.status_code == 200 and odd.content == odd_index and odd.headers["content-type"] == OCI_INDEX
            assert "Traceback" not in cache.log.read_text()
