"""Malformed and hostile input, from clients and from upstreams, through the real app: always a clear 4xx (or a
502 for an upstream's fault), never a 500, and nothing from an upstream served as something a browser renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.auth import Authenticator, PullKey, SigningKey, TokenService, hash_secret
from core.budget import MissBudget, MissBudgetPolicy
from core.cache import PullThroughCache
from core.digest import Digest
from core.mediatypes import OCI_MANIFEST
from core.rules import Rule, RuleSet
from handlers.http.registry import create_app
from pullthrough_adapters.local.blob_store import FileBlobStore
from pullthrough_adapters.local.filler import TeeFiller
from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
from tests.fakes import FakeUpstream, FakeUpstreams


def oci_error(response) -> str:
    return response.json()["errors"][0]["code"]


@pytest.fixture
def client(cache: PullThroughCache) -> TestClient:
    return TestClient(create_app(cache), raise_server_exceptions=False)


@pytest.mark.parametrize(
    "path, params, headers, status, code",
    [
        ("/v2/up/library/app/tags/list", {"n": "²"}, {}, 400, "PAGINATION_NUMBER_INVALID"),  # a Unicode digit
        ("/v2/up/library/app/tags/list", {"n": "٣"}, {}, 400, "PAGINATION_NUMBER_INVALID"),
        ("/v2/up/library/app/tags/list", {"n": "9" * 3000}, {}, 400, "PAGINATION_NUMBER_INVALID"),
        ("/v2/_catalog", {"n": "1" * 50}, {}, 400, "PAGINATION_NUMBER_INVALID"),
        ("/v2/library/app/manifests/v1", {"ns": "docker.io\r\nSet-Cookie: a=b"}, {}, 400, "NAME_INVALID"),
        ("/v2/library/app/manifests/v1", {"ns": "docker.io\n"}, {}, 400, "NAME_INVALID"),
        ("/v2/library/app/manifests/v1", {"ns": '"><script>'}, {}, 400, "NAME_INVALID"),
        ("/v2/up/library/app%0a/manifests/v1", {}, {}, 404, "NAME_UNKNOWN"),  # no route takes a newline
        ("/v2/up/library/app/manifests/v1%0a", {}, {}, 404, "MANIFEST_UNKNOWN"),
        ("/v2/up/library/app/blobs/sha256:" + "a" * 64 + "%0a", {}, {}, 400, "DIGEST_INVALID"),
    ],
)
def test_malformed_requests_get_a_4xx(client, upstream, path, params, headers, status, code):
    upstream.add_image("library/app", "v1")
    response = client.get(path, params=params, headers=headers)
    assert response.status_code == status and oci_error(response) == code
    assert "set-cookie" not in response.headers


def test_a_range_of_thousands_of_digits_is_ignored_not_a_500(client, upstream):
    layer = b"x" * 1000
    upstream.add_image("library/app", "v1", layer=layer)
    path = f"/v2/up/library/app/blobs/{Digest.of(layer)}"
    latin1_digit = "bytes=²-".encode("latin-1")
    for header in (f"bytes={'9' * 4400}-", f"bytes=0-{'9' * 4400}", f"bytes=-{'1' * 5000}", latin1_digit):
        response = client.get(path, headers={"Range": header})
        assert response.status_code == 200 and response.content == layer, header


@pytest.mark.parametrize(
    "document",
    [
        {"mediaType": "text/html", "layers": []},
        {"mediaType": OCI_MANIFEST, "layers": "<script>alert(1)</script>", "x": [[[[]]]]},
        "deeply nested",
        "not json",
        "array",
    ],
)
def test_a_hostile_upstream_manifest_is_a_bad_gateway_never_stored_never_rendered(client, upstream, tmp_path, document):
    if document == "deeply nested":
        data = b"[" * 200_000 + b"]" * 200_000
    elif document == "not json":
        data = b"<html><script>alert(1)</script></html>"
    elif document == "array":
        data = b"[]"
    else:
        data = json.dumps(document).encode()
    digest = Digest.of(data)
    upstream.manifests[str(digest)] = (data, "text/html")
    upstream.tags[("library/evil", "v1")] = str(digest)
    upstream.repositories.add("library/evil")
    for reference in ("v1", str(digest)):
        response = client.get(f"/v2/up/library/evil/manifests/{reference}")
        if document == {"mediaType": OCI_MANIFEST, "layers": "<script>alert(1)</script>", "x": [[[[]]]]}:
            # a manifest with an odd field is still the upstream's manifest: served byte for byte, as its type
            assert response.status_code == 200 and response.headers["content-type"] == OCI_MANIFEST
        else:
            assert response.status_code == 502 and oci_error(response) == "MANIFEST_INVALID"
            assert not FileBlobStore(tmp_path / "data").exists(digest)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert not response.headers["content-type"].startswith("text/")


def test_every_response_says_nosniff(client, upstream):
    upstream.add_image("library/app", "v1")
    for method, path in [("GET", "/v2/"), ("GET", "/v2/up/library/app/manifests/v1"), ("HEAD", "/v2/nope/x/tags/list"),
                         ("GET", "/v2/up/" + "a" * 5000), ("DELETE", "/v2/up/library/app/manifests/v1"),
                         ("GET", "/elsewhere")]:  # fmt: skip
        assert client.request(method, path).headers["x-content-type-options"] == "nosniff", path


def test_challenges_are_quoted_safely(tmp_path: Path, upstream: FakeUpstream):
    blobs, metadata = FileBlobStore(tmp_path), SqliteMetadataStore(tmp_path / "m.sqlite3")
    auth = Authenticator(metadata, TokenService(lambda: [SigningKey("k", b"k" * 32)], 'pull"through'))
    cache = PullThroughCache(RuleSet([Rule("up", "http://upstream.invalid")]), metadata, blobs, FakeUpstreams(upstream),
                             TeeFiller(blobs, metadata))  # fmt: skip
    app = create_app(cache, auth, token_realm=lambda request: "https://cache.example/token")
    client = TestClient(app, raise_server_exceptions=False)
    for path in ['/v2/up/a"b,realm="https://evil.example/manifests/v1', "/v2/up/a%22b/manifests/v1"]:
        challenge = client.get(path).headers["www-authenticate"]
        assert challenge.count("realm=") == 1 and "evil" not in challenge
        assert challenge == 'Bearer realm="https://cache.example/token",service="pull\\"through"'


def budgeted_app(tmp_path: Path, upstream: FakeUpstream, *, token: bool) -> tuple[TestClient, dict[str, str]]:
    blobs, metadata = FileBlobStore(tmp_path), SqliteMetadataStore(tmp_path / "m.sqlite3")
    cache = PullThroughCache(RuleSet([Rule("up", "http://upstream.invalid")]), metadata, blobs, FakeUpstreams(upstream),
                             TeeFiller(blobs, metadata))  # fmt: skip
    auth = None
    headers: dict[str, str] = {}
    if token:
        metadata.put_key(PullKey("ci", ("",), hash_secret("s"), 0.0))
        auth = Authenticator(metadata, TokenService(lambda: [SigningKey("k", b"k" * 32)], "pullthrough"))
    budget = MissBudget(metadata, MissBudgetPolicy(limit=3))
    app = create_app(cache, auth, token_realm=lambda request: "https://cache.example/token", budget=budget)
    client = TestClient(app, raise_server_exceptions=False)
    if token:
        scope = {"scope": "repository:up/library/app:pull"}
        headers["Authorization"] = "Bearer " + client.get("/token", params=scope, auth=("ci", "s")).json()["token"]
    return client, headers


@pytest.mark.parametrize("token", [False, True])
def test_each_client_has_a_budget_of_upstream_misses_and_hits_are_never_limited(tmp_path, upstream, token):
    upstream.add_image("library/app", "v1")
    client, headers = budgeted_app(tmp_path, upstream, token=token)
    assert client.get("/v2/up/library/app/manifests/v1", headers=headers).status_code == 200  # miss 1
    for n in range(2):  # misses 2 and 3: random digests, each an upstream request
        response = client.get(f"/v2/up/library/app/blobs/sha256:{str(n) * 64}", headers=headers)
        assert response.status_code == 404
    asked = sum(upstream.calls.values())
    refused = client.get(f"/v2/up/library/app/blobs/sha256:{'9' * 64}", headers=headers)
    assert refused.status_code == 429 and oci_error(refused) == "TOOMANYREQUESTS"
    assert 0 < int(refused.headers["retry-after"]) <= 2 * 60  # may reach into the next minute
    assert sum(upstream.calls.values()) == asked  # the upstream was not asked
    for _ in range(10):  # cached content: never limited
        assert client.get("/v2/up/library/app/manifests/v1", headers=headers).status_code == 200
