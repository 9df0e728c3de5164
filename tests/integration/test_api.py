"""The HTTP surface, table-driven, through the real FastAPI app over real local storage and a fake upstream."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from core.breaker import FAILURE_THRESHOLD
from core.cache import PullThroughCache
from core.digest import Digest
from core.errors import TooManyRequests, Unavailable
from core.mediatypes import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from handlers.http.registry import create_app
from pullthrough_adapters.local.blob_store import FileBlobStore
from tests.fakes import FakeUpstream

LAYER = bytes(range(256)) * 400  # 102400 bytes


@pytest.fixture
def image(upstream: FakeUpstream) -> dict[str, str]:
    manifest = upstream.add_image("library/app", "v1", layer=LAYER)
    index, _ = upstream.add_index("library/multi", "v1")
    return {"manifest": str(manifest), "layer": str(Digest.of(LAYER)), "index": str(index)}


@pytest.fixture
def client(cache: PullThroughCache) -> TestClient:
    return TestClient(create_app(cache), raise_server_exceptions=False)


def oci_error(response) -> str:
    body = response.json()
    assert set(body) == {"errors"} and body["errors"], body
    return body["errors"][0]["code"]


@pytest.mark.parametrize("path", ["/v2/", "/v2"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_ping(client, path, method):
    response = client.request(method, path)
    assert response.status_code == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert response.content == (b"{}" if method == "GET" else b"")


def test_manifest_get_and_head_carry_the_same_headers(client, image):
    get = client.get("/v2/up/library/app/manifests/v1")
    head = client.head("/v2/up/library/app/manifests/v1")
    assert get.status_code == head.status_code == 200
    assert Digest.of(get.content) == Digest.parse(image["manifest"])
    for response in (get, head):
        assert response.headers["docker-content-digest"] == image["manifest"]
        assert response.headers["content-type"] == OCI_MANIFEST
        assert response.headers["content-length"] == str(len(get.content))
    assert head.content == b""


def test_manifest_by_digest_and_index_negotiation(client, image):
    assert client.get(f"/v2/up/library/app/manifests/{image['manifest']}").status_code == 200
    response = client.get("/v2/up/library/multi/manifests/v1", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
    assert response.headers["content-type"] == OCI_INDEX
    # an index to a client that takes only image manifests: its linux/amd64 image
    child = client.get("/v2/up/library/multi/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert child.status_code == 200 and child.headers["content-type"] == OCI_MANIFEST
    assert child.headers["docker-content-digest"] == str(Digest.of(child.content)) != image["index"]


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_a_docker_manifest_asked_for_with_an_oci_only_accept_is_served_as_it_is(client, upstream, by):
    """The conformance suite's Accept (OCI types only) on a Docker schema2 image: by digest the spec says MUST
    serve; by tag, with no acceptable alternative, the tag's manifest is served rather than a 404."""
    digest = upstream.add_image("library/docker", "v1", media_type=DOCKER_MANIFEST)
    reference = "v1" if by == "tag" else str(digest)
    for method in ("GET", "HEAD"):
        response = client.request(
            method, f"/v2/up/library/docker/manifests/{reference}", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == DOCKER_MANIFEST
        assert response.headers["docker-content-digest"] == str(digest)


def test_blob_get_head_and_ranges(client, image):
    path = f"/v2/up/library/app/blobs/{image['layer']}"
    cold = client.get(path)
    assert cold.status_code == 200 and cold.content == LAYER
    assert cold.headers["docker-content-digest"] == image["layer"] and cold.headers["x-cache"] == "miss"
    warm = client.get(path)
    assert warm.content == LAYER and warm.headers["content-length"] == str(len(LAYER))
    assert warm.headers["x-cache"] == "hit"
    head = client.head(path)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(LAYER))
    assert head.headers["x-cache"] == "hit"

    partial = client.get(path, headers={"Range": "bytes=500-1499"})
    assert partial.status_code == 206 and partial.content == LAYER[500:1500]
    assert partial.headers["content-range"] == f"bytes 500-1499/{len(LAYER)}"
    suffix = client.get(path, headers={"Range": "bytes=-10"})
    assert suffix.status_code == 206 and suffix.content == LAYER[-10:]
    for bad in ("bytes=500-0", f"bytes={len(LAYER)}-"):
        unsatisfiable = client.get(path, headers={"Range": bad})
        assert unsatisfiable.status_code == 416 and oci_error(unsatisfiable) == "RANGE_INVALID"
        assert unsatisfiable.headers["content-range"] == f"bytes */{len(LAYER)}"


def test_range_on_a_cold_blob(client, image):
    response = client.get(f"/v2/up/library/app/blobs/{image['layer']}", headers={"Range": "bytes=100-199"})
    assert response.status_code == 206 and response.content == LAYER[100:200]


def test_tags_list_with_link(client, upstream, image):
    for tag in ("v2", "v3"):
        upstream.add_image("library/app", tag)
    response = client.get("/v2/up/library/app/tags/list", params={"n": 2})
    assert response.json() == {"name": "up/library/app", "tags": ["v1", "v2"]}
    assert response.headers["link"] == '</v2/up/library/app/tags/list?n=2&last=v2>; rel="next"'
    last = client.get("/v2/up/library/app/tags/list", params={"n": 2, "last": "v2"})
    assert last.json()["tags"] == ["v3"] and "link" not in last.headers


def test_catalog_lists_what_is_cached(client, image):
    client.get("/v2/up/library/app/manifests/v1")
    assert client.get("/v2/_catalog").json() == {"repositories": ["up/library/app"]}


@pytest.mark.parametrize(
    "method, path, headers, status, code",
    [
        ("GET", "/v2/nowhere/app/manifests/v1", {}, 404, "NAME_UNKNOWN"),
        ("GET", "/v2/up/library/app/manifests/missing", {}, 404, "MANIFEST_UNKNOWN"),
        ("HEAD", "/v2/up/library/app/manifests/missing", {}, 404, None),
        ("GET", "/v2/up/library/app/manifests/.INVALID_MANIFEST_NAME", {}, 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/up/library/app/manifests/sha256:totallywrong", {}, 400, "DIGEST_INVALID"),
        ("GET", "/v2/up/library/app/blobs/sha256:" + "0" * 64, {}, 404, "BLOB_UNKNOWN"),
        ("HEAD", "/v2/up/library/app/blobs/sha256:" + "0" * 64, {}, 404, None),
        ("GET", "/v2/up/library/app/blobs/md5:abc", {}, 400, "DIGEST_INVALID"),
        ("GET", "/v2/up/library/app/blobs/sha256:..%2F..%2Fetc", {}, 400, "NAME_INVALID"),
        ("GET", "/v2/up/Library/App/manifests/v1", {}, 400, "NAME_INVALID"),
        ("GET", "/v2/up/a/../b/manifests/v1", {}, 404, "MANIFEST_UNKNOWN"),  # the client resolves the dots
        ("GET", "/v2/up/library/app/tags/list?n=abc", {}, 400, "PAGINATION_NUMBER_INVALID"),
        ("GET", "/v2/up/library/app/referrers/sha256:abc", {}, 400, "DIGEST_INVALID"),
        ("GET", "/v2/nowhere/app/referrers/sha256:" + "0" * 64, {}, 404, "NAME_UNKNOWN"),
        ("GET", "/v2/up/library/app/unknown", {}, 404, "NAME_UNKNOWN"),
        ("GET", "/", {}, 404, "NAME_UNKNOWN"),
        ("POST", "/v2/up/library/app/blobs/uploads/", {}, 405, "UNSUPPORTED"),
        ("PUT", "/v2/up/library/app/manifests/v1", {}, 405, "UNSUPPORTED"),
        ("PATCH", "/v2/up/library/app/blobs/uploads/x", {}, 405, "UNSUPPORTED"),
        ("DELETE", "/v2/up/library/app/manifests/v1", {}, 405, "UNSUPPORTED"),
        ("DELETE", "/v2/up/library/app/blobs/sha256:" + "0" * 64, {}, 405, "UNSUPPORTED"),
        ("POST", "/v2/", {}, 405, "UNSUPPORTED"),
    ],
)  # fmt: skip
def test_errors_are_oci_json_with_the_right_status(client, image, method, path, headers, status, code):
    response = client.request(method, path, headers=headers)
    assert response.status_code == status
    if code is not None:
        assert oci_error(response) == code
        assert response.headers["content-type"] == "application/json"
    else:
        assert response.content == b""  # HEAD has no body, even on errors


def test_a_throttling_upstream_gives_429_and_is_left_alone_meanwhile(client, upstream, image):
    upstream.failure = TooManyRequests("slow down", retry_after=42)
    for _ in range(FAILURE_THRESHOLD):
        throttled = client.get("/v2/up/library/app/manifests/v1")
        assert throttled.status_code == 429 and oci_error(throttled) == "TOOMANYREQUESTS"
        assert throttled.headers["retry-after"] == "42"
    assert sum(upstream.calls.values()) == FAILURE_THRESHOLD  # each asked: one 429 is no verdict on the upstream
    upstream.calls.clear()
    again = client.get("/v2/up/library/app/blobs/" + image["layer"])
    assert again.status_code == 429 and 0 < int(again.headers["retry-after"]) <= 42
    assert upstream.calls == {}  # answered from the back-off, not by asking again


def test_an_unreachable_upstream_gives_503(client, upstream, image):
    upstream.failure = Unavailable("down")
    down = client.get("/v2/up/library/app/manifests/v1")
    assert down.status_code == 503 and oci_error(down) == "UNAVAILABLE"
    assert int(down.headers["retry-after"]) > 0


def test_stale_manifest_served_with_warning(client, upstream, image, clock):
    client.get("/v2/up/library/app/manifests/v1")
    clock.advance(10_000)
    upstream.failure = Unavailable("down")
    response = client.get("/v2/up/library/app/manifests/v1")
    assert response.status_code == 200 and response.headers["warning"].startswith('299 - "serving a cached copy')


def test_corrupt_blob_never_reaches_the_client_whole(client, upstream, image, tmp_path, caplog):
    upstream.corrupt_blobs = True
    response = client.get(f"/v2/up/library/app/blobs/{image['layer']}")
    # the last byte is held back until verification, which fails: the response is aborted short
    assert response.status_code == 200 and len(response.content) < len(LAYER)
    assert not FileBlobStore(tmp_path / "data").exists(Digest.parse(image["layer"]))
    assert "aborted GET" in caplog.text and "unexpected error" not in caplog.text
    upstream.corrupt_blobs = False
    upstream.calls.clear()
    assert client.get(f"/v2/up/library/app/blobs/{image['layer']}").content == LAYER
    assert upstream.calls["open_blob"] == 1  # fetched again: nothing of the corrupt copy was kept


def wait_for_fills(cache) -> None:
    """Until the fills in flight let go: a client has its bytes before its fill has stored (renamed into place) and
    recorded the blob, and a test that deletes the file must not race that."""
    assert cache._filler.drain(10)


def test_content_deleted_behind_the_cache_is_fetched_again(client, cache, upstream, image, tmp_path):
    manifest = client.get("/v2/up/library/app/manifests/v1")
    client.get(f"/v2/up/library/app/blobs/{image['layer']}")
    wait_for_fills(cache)
    for digest in (image["manifest"], image["layer"]):  # as if someone cleaned the data directory by hand
        encoded = digest.split(":")[1]
        (tmp_path / "data" / "blobs" / "sha256" / encoded[:2] / encoded).unlink()
    upstream.calls.clear()
    assert client.head("/v2/up/library/app/manifests/v1").status_code == 200  # the record answers a HEAD
    assert client.get("/v2/up/library/app/manifests/v1").content == manifest.content
    assert client.get(f"/v2/up/library/app/blobs/{image['layer']}").content == LAYER
    assert upstream.calls == {"get_manifest": 1, "open_blob": 1}


def test_a_blob_deleted_between_its_lookup_and_its_answer_is_filled_again(client, cache, upstream, image, tmp_path):
    """The lifecycle may delete a file in the instant after a request found it: the request fills it again."""
    client.get(f"/v2/up/library/app/blobs/{image['layer']}")
    # A request that joined the fill after the deletion below would find the file it just stored gone (the
    # lifecycle never deletes one that young).
    wait_for_fills(cache)
    encoded = image["layer"].split(":")[1]
    path = tmp_path / "data" / "blobs" / "sha256" / encoded[:2] / encoded
    found = cache.lookup_blob

    def found_then_deleted(*args, **kwargs):
        body = found(*args, **kwargs)
        path.unlink(missing_ok=True)
        return body

    cache.lookup_blob = found_then_deleted
    upstream.calls.clear()
    response = client.get(f"/v2/up/library/app/blobs/{image['layer']}")
    assert response.status_code == 200 and response.content == LAYER and response.headers["x-cache"] == "miss"
    assert upstream.calls == {"open_blob": 1}


def test_docker_manifest_list_by_tag_for_old_clients(client, upstream):
    _, children = upstream.add_index("library/legacy", "v1", docker=True)
    response = client.get("/v2/up/library/legacy/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert response.headers["docker-content-digest"] == str(children["amd64"])
    assert json.loads(response.content)["mediaType"] == DOCKER_MANIFEST


def test_ns_routes_a_mirror_request_to_the_rule_for_that_registry(client, image):
    response = client.get("/v2/library/app/manifests/v1", params={"ns": "upstream.invalid"})
    assert response.status_code == 200 and response.headers["oci-namespace"] == "upstream.invalid"
    assert response.headers["docker-content-digest"] == image["manifest"]
    blob = client.get(f"/v2/library/app/blobs/{image['layer']}", params={"ns": "upstream.invalid"})
    assert blob.status_code == 200 and blob.content == LAYER
    unknown = client.get("/v2/library/app/manifests/v1", params={"ns": "elsewhere.example"})
    assert unknown.status_code == 404 and oci_error(unknown) == "NAME_UNKNOWN"
    referrers = client.get(f"/v2/library/app/referrers/{image['manifest']}", params={"ns": "upstream.invalid"})
    assert referrers.status_code == 200 and referrers.headers["oci-namespace"] == "upstream.invalid"  # routed alike


def test_referrers_answer_an_index_of_the_subjects_referrers(client, image, upstream: FakeUpstream):
    """The conformance suite's checks: 200 with the index media type for any digest (no 404: clients would fall
    back), an artifactType filter said in OCI-Filters-Applied, and each referrer then pulls by digest."""
    subject = Digest.parse(image["manifest"])
    signature = upstream.add_referrer("library/app", subject, "application/vnd.example.sig", b"signed")
    upstream.add_referrer("library/app", subject, "application/spdx+json", b"{}")

    everything = client.get(f"/v2/up/library/app/referrers/{subject}")
    assert everything.status_code == 200 and everything.headers["content-type"] == OCI_INDEX
    assert "oci-filters-applied" not in everything.headers
    assert len(everything.json()["manifests"]) == 2
    only = {"artifactType": "application/vnd.example.sig"}
    filtered = client.get(f"/v2/up/library/app/referrers/{subject}", params=only)
    assert filtered.headers["oci-filters-applied"] == "artifactType"
    assert [entry["digest"] for entry in filtered.json()["manifests"]] == [str(signature)]
    pulled = client.get(f"/v2/up/library/app/manifests/{signature}", headers={"Accept": OCI_MANIFEST})
    assert pulled.status_code == 200 and Digest.of(pulled.content) == signature

    none = client.get("/v2/up/library/app/referrers/sha256:" + "0" * 64)
    assert none.status_code == 200 and none.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def test_denied_repositories_and_tags(tmp_path, upstream):
    from core.rules import Rule, RuleSet
    from pullthrough_adapters.local.blob_store import FileBlobStore
    from pullthrough_adapters.local.filler import TeeFiller
    from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
    from tests.fakes import FakeUpstreams

    upstream.add_image("library/app", "v1")
    upstream.add_image("library/app", "latest")
    rules = RuleSet([Rule("up", "http://upstream.invalid", allow=("library/*",), deny=("library/secret*",),
                          allowed_tags=r"v\d+")])  # fmt: skip
    blobs, metadata = FileBlobStore(tmp_path), SqliteMetadataStore(tmp_path / "m.sqlite3")
    client = TestClient(create_app(PullThroughCache(rules, metadata, blobs, FakeUpstreams(upstream),
                                                    TeeFiller(blobs, metadata))))  # fmt: skip
    assert client.get("/v2/up/library/app/manifests/v1").status_code == 200
    for path in ("/v2/up/library/app/manifests/latest", "/v2/up/library/secret-thing/manifests/v1",
                 "/v2/up/other/app/manifests/v1"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 403 and oci_error(response) == "DENIED", path
    assert client.get("/v2/up/library/app/tags/list").json()["tags"] == ["v1"]
    assert upstream.calls["get_manifest"] == 1  # nothing refused was fetched


@pytest.mark.parametrize(
    "path, headers, status, code",
    [
        ("/v2/up/" + "a" * 5000 + "/manifests/v1", [], 414, "SIZE_INVALID"),
        ("/v2/up/library/app/manifests/v1", [("X-Big", "b" * 20000)], 431, "SIZE_INVALID"),
        ("/v2/up/library/app/manifests/v1", [(f"X-{n}", "v") for n in range(120)], 431, "SIZE_INVALID"),
        ("/v2/up/library/app/manifests/v1", [("Range", "bytes=0-1"), ("Range", "bytes=2-3")], 431, "SIZE_INVALID"),
        ("/v2/up%2Flibrary%2Fapp/manifests/v1", [], 400, "NAME_INVALID"),
        ("/v2/up%5clibrary/app/manifests/v1", [], 400, "NAME_INVALID"),
    ],
)  # fmt: skip
def test_oversized_and_odd_requests_are_refused_before_routing(client, image, path, headers, status, code):
    response = client.get(path, headers=headers)
    assert response.status_code == status and oci_error(response) == code
    head = client.head(path, headers=headers)
    assert head.status_code == status and head.content == b""
    assert client.get("/v2/").status_code == 200


def test_token_mode_challenges_issues_scoped_tokens_and_filters_the_catalog(tmp_path, upstream, image):
    from core.auth import Authenticator, PullKey, SigningKey, TokenService, hash_secret
    from core.mediatypes import Accept
    from core.rules import Rule, RuleSet
    from pullthrough_adapters.local.blob_store import FileBlobStore
    from pullthrough_adapters.local.filler import TeeFiller
    from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
    from tests.fakes import FakeUpstreams

    upstream.add_image("library/other", "v1")
    rules = RuleSet([Rule("up", "http://upstream.invalid"), Rule("hub", "http://hub.invalid")])
    blobs, metadata = FileBlobStore(tmp_path), SqliteMetadataStore(tmp_path / "m.sqlite3")
    metadata.put_key(PullKey("ci", ("up",), hash_secret("s3cret"), 0.0))
    auth = Authenticator(metadata, TokenService(lambda: [SigningKey("k", b"k" * 32)], "pullthrough"))
    cache = PullThroughCache(rules, metadata, blobs, FakeUpstreams(upstream), TeeFiller(blobs, metadata))
    app = create_app(cache, auth, token_realm=lambda request: "https://cache.example/token")
    client = TestClient(app, raise_server_exceptions=False)

    refused = client.get("/v2/up/library/app/manifests/v1", headers={"Host": "attacker.example"})
    assert refused.status_code == 401 and oci_error(refused) == "UNAUTHORIZED"
    assert refused.headers["www-authenticate"] == (  # the configured realm, whatever Host the client sent
        'Bearer realm="https://cache.example/token",service="pullthrough",scope="repository:up/library/app:pull"'
    )
    scope = {"scope": ["repository:up/library/app:pull", "repository:hub/library/other:pull"]}
    assert client.get("/token", params=scope, auth=("ci", "wrong")).status_code == 401
    token = client.get("/token", params=scope, auth=("ci", "s3cret")).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/v2/up/library/app/manifests/v1", headers=bearer).status_code == 200
    other = client.get("/v2/hub/library/other/manifests/v1", headers=bearer)
    assert other.status_code == 403 and oci_error(other) == "DENIED"  # asked for, but not the key's prefix
    assert client.get("/v2/hub/library/other/manifests/v1").status_code == 401
    referrers = f"/referrers/{image['manifest']}"  # the referrers API is a pull like the rest
    assert client.get(f"/v2/up/library/app{referrers}").status_code == 401
    assert client.get(f"/v2/up/library/app{referrers}", headers=bearer).status_code == 200
    assert oci_error(client.get(f"/v2/hub/library/other{referrers}", headers=bearer)) == "DENIED"
    cache.manifest("hub/library/other", "v1", Accept([]), with_body=False)  # cached for someone else
    assert client.get("/v2/_catalog", headers=bearer).json() == {"repositories": ["up/library/app"]}
