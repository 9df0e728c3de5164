"""The registry client's handling of what only public registries do (a test double stands in for them: they cannot
be reached from here): Bearer token dances, redirects to another host, rate-limit headers."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from core.digest import Digest
from core.errors import Denied, ManifestInvalid, TooManyRequests, Unavailable
from core.ports import RateLimit
from core.rules import Rule
from pullthrough_adapters.upstream.addresses import AddressPolicy
from pullthrough_adapters.upstream.client import RegistryClient
from pullthrough_adapters.upstream.credentials import Credentials

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}).encode()


def client_for(handler, rule: Rule | None = None) -> tuple[RegistryClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.Client(transport=httpx.MockTransport(record), follow_redirects=False)
    rule = rule or Rule("hub", "https://registry.example", credentials="env:HUB")
    return RegistryClient(rule, http, AddressPolicy(), lambda: Credentials("u", "p")), seen


def docker_hub_like(request: httpx.Request) -> httpx.Response:
    if request.url.host == "auth.example":
        assert request.url.params["scope"] == "repository:library/alpine:pull"
        assert request.url.params["service"] == "registry.example"
        return httpx.Response(200, json={"token": "t0ken", "expires_in": 300})
    if request.headers.get("authorization") != "Bearer t0ken":
        challenge = 'Bearer realm="https://auth.example/token",service="registry.example"'
        return httpx.Response(401, headers={"www-authenticate": challenge})
    if request.url.path.endswith("/blobs/sha256:" + "a" * 64):
        return httpx.Response(307, headers={"location": "https://cdn.example/blob?signature=x"})
    return httpx.Response(
        200,
        content=MANIFEST,
        headers={
            "ratelimit-remaining": "3;w=21600",
            "ratelimit-limit": "100;w=21600",
            "content-type": "application/vnd.oci.image.manifest.v1+json",
        },
    )


def test_bearer_token_is_fetched_once_and_reused(caplog: pytest.LogCaptureFixture):
    client, seen = client_for(docker_hub_like)
    with caplog.at_level(logging.WARNING):
        assert client.get_manifest("library/alpine", "3").data == MANIFEST
        assert client.get_manifest("library/alpine", "3.20").data == MANIFEST
    hosts = [request.url.host for request in seen]
    assert hosts == ["registry.example", "auth.example", "registry.example", "registry.example"]
    assert seen[1].headers["authorization"].startswith("Basic ")  # the rule's credentials, to its own realm only
    assert "3 pulls left" in caplog.text
    assert client.head_manifest("library/alpine", "3").rate_limit == RateLimit(remaining=3, limit=100)


def test_redirects_to_another_host_carry_no_credentials():
    def cdn(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example":
            return httpx.Response(200, content=b"blob")
        return docker_hub_like(request)

    client, seen = client_for(cdn)
    from core.digest import Digest

    with client.open_blob("library/alpine", Digest.parse("sha256:" + "a" * 64)) as blob:
        assert b"".join(blob.chunks) == b"blob"
    to_cdn = [request for request in seen if request.url.host == "cdn.example"]
    assert len(to_cdn) == 1 and "authorization" not in to_cdn[0].headers


def test_refused_credentials_and_throttling_map_to_oci_errors():
    client, _ = client_for(lambda request: httpx.Response(401, headers={"www-authenticate": 'Basic realm="x"'}))
    with pytest.raises(Denied):
        client.get_manifest("library/alpine", "3")
    client, _ = client_for(lambda request: httpx.Response(429, headers={"retry-after": "17"}))
    with pytest.raises(TooManyRequests) as raised:
        client.head_manifest("library/alpine", "3")
    assert raised.value.retry_after == 17


def test_a_redirect_to_another_registry_gets_an_anonymous_token_of_its_own():
    """registry.k8s.io sends manifests to Artifact Registry, which challenges again: the client answers that
    challenge for the new host, without the rule's credentials."""

    def k8s_like(request: httpx.Request) -> httpx.Response:
        if request.url.host == "registry.example":
            return httpx.Response(307, headers={"location": "https://ar.example/v2/k8s/pause/manifests/3.10"})
        if request.url.host == "ar-auth.example":
            return httpx.Response(200, json={"token": "anon"})
        if request.headers.get("authorization") != "Bearer anon":
            return httpx.Response(401, headers={"www-authenticate": 'Bearer realm="https://ar-auth.example/token"'})
        return httpx.Response(
            200, content=MANIFEST, headers={"content-type": "application/vnd.oci.image.manifest.v1+json"}
        )

    client, seen = client_for(k8s_like)
    assert client.get_manifest("pause", "3.10").data == MANIFEST
    token_requests = [request for request in seen if request.url.host == "ar-auth.example"]
    assert len(token_requests) == 1 and "authorization" not in token_requests[0].headers


def test_every_preset_is_a_valid_rule_with_a_public_https_upstream():
    from core.rules import RuleSet
    from handlers.presets import BUILTIN_RULES, PRESETS

    rules = RuleSet(BUILTIN_RULES)
    for name, rule in PRESETS.items():
        assert rule.upstream.startswith("https://"), name
        assert rules.by_prefix(rule.prefix) == rule
    assert rules.route("docker-hub/alpine").repository == "library/alpine"
    assert rules.route("alpine").rule.prefix == ""  # the root rule: Docker's registry-mirrors
    assert rules.route("k8s/pause").rule.upstream == "https://registry.k8s.io"


def test_a_refused_cached_token_is_replaced_by_a_new_one():
    upstream_state = {"issued": 0, "accepted": ""}

    def revoking(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            upstream_state["issued"] += 1
            upstream_state["accepted"] = f"t{upstream_state['issued']}"
            return httpx.Response(200, json={"token": upstream_state["accepted"], "expires_in": 300})
        if request.headers.get("authorization") != f"Bearer {upstream_state['accepted']}":
            return httpx.Response(401, headers={"www-authenticate": 'Bearer realm="https://auth.example/token"'})
        return httpx.Response(200, content=MANIFEST, headers={"content-type": OCI_MANIFEST})

    client, _ = client_for(revoking)
    assert client.get_manifest("library/alpine", "3").data == MANIFEST
    upstream_state["accepted"] = "revoked"  # the upstream stops taking the token the client holds, long before expiry
    assert client.get_manifest("library/alpine", "3").data == MANIFEST
    assert upstream_state["issued"] == 2  # refused once, then a fresh token: not stuck on the cached one


@pytest.mark.parametrize(
    "answer",
    [httpx.Response(200, content=b"<html>maintenance</html>"), httpx.Response(200, json=["token"]),
     httpx.Response(200, json={"token": "t", "expires_in": "soon"}), httpx.Response(502)],
)  # fmt: skip
def test_an_unreadable_or_failing_token_service_is_the_upstream_unavailable(answer: httpx.Response):
    def upstream(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return answer
        return httpx.Response(401, headers={"www-authenticate": 'Bearer realm="https://auth.example/token"'})

    client, _ = client_for(upstream)
    with pytest.raises(Unavailable):
        client.get_manifest("library/alpine", "3")


def test_token_service_refusal_and_throttling():
    for status, error in ((403, Denied), (429, TooManyRequests)):

        def upstream(request: httpx.Request, status: int = status) -> httpx.Response:
            if request.url.host == "auth.example":
                return httpx.Response(status)
            return httpx.Response(401, headers={"www-authenticate": 'Bearer realm="https://auth.example/token"'})

        client, _ = client_for(upstream)
        with pytest.raises(error):
            client.head_manifest("library/alpine", "3")


def test_upstream_statuses_map_to_oci_errors_and_digest_headers_are_normalised():
    answers = {
        "/v2/library/alpine/manifests/bad": httpx.Response(400),
        "/v2/library/alpine/manifests/down": httpx.Response(503),
        "/v2/library/alpine/manifests/loop": httpx.Response(
            302, headers={"location": "/v2/library/alpine/manifests/loop"}
        ),
        "/v2/library/alpine/manifests/huge": httpx.Response(200, content=b"x" * (4 * 1024 * 1024 + 1)),
        "/v2/library/alpine/manifests/ok": httpx.Response(
            200, content=MANIFEST, headers={"docker-content-digest": f" {Digest.of(MANIFEST)} "}
        ),
        "/v2/library/alpine/tags/list": httpx.Response(200, json={"tags": "latest"}),
    }
    client, _ = client_for(lambda request: answers[request.url.path])
    for reference, error in (("bad", ManifestInvalid), ("down", Unavailable), ("loop", Unavailable),
                             ("huge", ManifestInvalid)):  # fmt: skip
        with pytest.raises(error):
            client.get_manifest("library/alpine", reference)
    assert client.get_manifest("library/alpine", "ok").digest == Digest.of(MANIFEST)
    with pytest.raises(Unavailable):  # not a list of tags: unreadable, not its letters as tags
        client.list_tags("library/alpine", None, None)


# -- what the client does with an upstream that fails --------------------------------------------------------------

BLOB = bytes(range(256)) * 1024  # 256 KiB
BLOB_DIGEST = Digest.of(BLOB)


def plain_client(handler, timeout: float = 30.0) -> tuple[RegistryClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.Client(transport=httpx.MockTransport(record), follow_redirects=False)
    return RegistryClient(Rule("up", "https://registry.example"), http, AddressPolicy(), timeout_seconds=timeout), seen


@pytest.fixture(autouse=False)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    import pullthrough_adapters.upstream.client as client_module

    monkeypatch.setattr(client_module, "RETRY_PAUSES", (0.0, 0.0, 0.0))


@pytest.mark.usefixtures("no_pauses")
@pytest.mark.parametrize("failure", ["503", "502", "refused", "reset"])
def test_fast_failures_are_retried_and_a_later_success_is_the_answer(failure):
    answers = iter([failure, failure, "ok"])

    def handler(request: httpx.Request) -> httpx.Response:
        outcome = next(answers)
        if outcome == "refused":
            raise httpx.ConnectError("refused", request=request)
        if outcome == "reset":
            raise httpx.ReadError("reset", request=request)
        if outcome != "ok":
            return httpx.Response(int(outcome))
        return httpx.Response(200, content=MANIFEST, headers={"content-type": OCI_MANIFEST})

    client, seen = plain_client(handler)
    assert client.get_manifest("library/app", "v1").data == MANIFEST
    assert len(seen) == 3


@pytest.mark.usefixtures("no_pauses")
@pytest.mark.parametrize(
    "answer, whole_upstream",
    [(503, True), (502, True), (504, True), (500, False), ("refused", True), ("timeout", True)],
)
def test_what_is_left_after_retries_says_whether_the_whole_upstream_failed(answer, whole_upstream):
    def handler(request: httpx.Request) -> httpx.Response:
        if answer == "refused":
            raise httpx.ConnectError("refused", request=request)
        if answer == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(answer)

    client, seen = plain_client(handler)
    with pytest.raises(Unavailable) as failed:
        client.head_manifest("library/app", "v1")
    assert failed.value.whole_upstream is whole_upstream
    retried = answer in (502, 503, 504, "refused")
    assert len(seen) == (4 if retried else 1)  # a timeout took long enough; a 500 is that name's answer


def test_a_long_retry_after_is_not_waited_out_but_passed_on():
    client, seen = plain_client(lambda request: httpx.Response(503, headers={"retry-after": "120"}))
    with pytest.raises(Unavailable) as failed:
        client.head_manifest("library/app", "v1")
    assert failed.value.retry_after == 120 and failed.value.whole_upstream and len(seen) == 1


class _CutStream(httpx.SyncByteStream):
    """A body that breaks off after `cut` bytes, as a reset connection does."""

    def __init__(self, data: bytes, cut: int, error: type[Exception] = httpx.ReadError) -> None:
        self._data, self._cut, self._error = data, cut, error

    def __iter__(self):
        yield self._data[: self._cut]
        raise self._error("connection reset")


def ranged(request: httpx.Request, cuts: list[int]) -> httpx.Response:
    """The blob, from the requested offset; cut at the next of `cuts` (absolute offsets) if any is left."""
    start = int(request.headers.get("range", "bytes=0-").removeprefix("bytes=").split("-")[0])
    data = BLOB[start:]
    headers = {"content-length": str(len(data))}
    status = 200
    if start:
        status, headers["content-range"] = 206, f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"
    if cuts:
        return httpx.Response(status, headers=headers, stream=_CutStream(data, cuts.pop(0) - start))
    return httpx.Response(status, headers=headers, content=data)


@pytest.mark.usefixtures("no_pauses")
def test_a_cut_download_resumes_from_the_last_byte_received():
    cuts = [1000, 100_000, 200_000]  # three cuts: three resumes
    client, seen = plain_client(lambda request: ranged(request, cuts))
    with client.open_blob("library/app", BLOB_DIGEST) as blob:
        assert blob.size == len(BLOB) and b"".join(blob.chunks) == BLOB
    assert [request.headers.get("range") for request in seen] == [
        None, "bytes=1000-", "bytes=100000-", "bytes=200000-"
    ]  # fmt: skip


@pytest.mark.usefixtures("no_pauses")
def test_a_download_cut_too_often_fails_as_that_downloads_problem():
    cuts = [1000, 2000, 3000, 4000, 5000]
    client, seen = plain_client(lambda request: ranged(request, cuts))
    with pytest.raises(Unavailable) as failed, client.open_blob("library/app", BLOB_DIGEST) as blob:
        b"".join(blob.chunks)
    assert not failed.value.whole_upstream
    assert len(seen) == 4  # the first request and three resumes


@pytest.mark.usefixtures("no_pauses")
def test_an_upstream_ignoring_the_range_is_skipped_to_the_right_place():
    answers = iter([httpx.Response(200, headers={"content-length": str(len(BLOB))}, stream=_CutStream(BLOB, 5000))])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or httpx.Response(200, content=BLOB)  # the whole blob again, not a 206

    client, _ = plain_client(handler)
    with client.open_blob("library/app", BLOB_DIGEST) as blob:
        assert b"".join(blob.chunks) == BLOB


@pytest.mark.usefixtures("no_pauses")
def test_a_resume_at_the_wrong_place_is_refused():
    answers = iter([httpx.Response(200, headers={"content-length": str(len(BLOB))}, stream=_CutStream(BLOB, 5000))])

    def handler(request: httpx.Request) -> httpx.Response:
        wrong = {"content-range": f"bytes 0-{len(BLOB) - 1}/{len(BLOB)}"}
        return next(answers, None) or httpx.Response(206, content=BLOB, headers=wrong)

    client, _ = plain_client(handler)
    with pytest.raises(Unavailable, match="wrong place"), client.open_blob("library/app", BLOB_DIGEST) as blob:
        b"".join(blob.chunks)


class _DripStream(httpx.SyncByteStream):
    def __iter__(self):
        while True:
            time.sleep(0.05)
            yield b"x"


@pytest.mark.usefixtures("no_pauses")
def test_a_drip_fed_body_has_stalled_though_no_read_timed_out():
    client, seen = plain_client(lambda request: httpx.Response(200, stream=_DripStream(),
                                                               headers={"content-length": str(len(BLOB))}),
                                timeout=0.2)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(Unavailable, match="stalled") as failed, client.open_blob("library/app", BLOB_DIGEST) as blob:
        b"".join(blob.chunks)
    assert failed.value.whole_upstream  # a stall says the upstream is in trouble
    assert time.monotonic() - started < 5 and len(seen) == 4  # resumed, stalled again each time


@pytest.mark.parametrize("value", ["²", "١٢", "9" * 40, "-1", "1e3"])
def test_header_numbers_are_ascii_digits_or_nothing(value):
    client, _ = plain_client(lambda request: httpx.Response(200, headers={"content-length": value.encode()}))
    assert client.head_blob("library/app", BLOB_DIGEST) is None


# -- the referrers API -------------------------------------------------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SUBJECT = Digest.of(b"subject")


def referrer(number: int) -> dict[str, object]:
    return {"mediaType": OCI_MANIFEST, "digest": str(Digest.of(b"%d" % number)), "size": number,
            "artifactType": "application/example"}  # fmt: skip


def test_a_paged_referrers_answer_is_read_whole():
    pages = {None: ([referrer(1), referrer(2)], "2"), "2": ([referrer(3)], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v2/library/app/referrers/{SUBJECT}"
        entries, following = pages[request.url.params.get("last")]
        headers = {"content-type": OCI_INDEX}
        if following:
            headers["link"] = f'</v2/library/app/referrers/{SUBJECT}?n=2&last={following}>; rel="next"'
        return httpx.Response(200, json={"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
                              headers=headers)  # fmt: skip

    client, seen = plain_client(handler)
    answer = client.referrers("library/app", SUBJECT)
    assert answer is not None and answer.content_type == OCI_INDEX
    assert json.loads(answer.data)["manifests"] == [referrer(1), referrer(2), referrer(3)]
    assert len(seen) == 2


@pytest.mark.parametrize(
    "absent",
    [httpx.Response(404, text="404 page not found\n"), httpx.Response(200, json={"tags": []})],
    ids=["404 (distribution 2.8, Docker Hub)", "200 with something else"],
)
def test_an_upstream_without_the_referrers_api_is_remembered(absent: httpx.Response):
    client, seen = plain_client(lambda request: absent)
    assert client.referrers("library/app", SUBJECT) is None
    assert client.referrers("library/other", SUBJECT) is None
    assert len(seen) == 1  # asked once, then answered from the tag schema for an hour


def test_a_repository_unknown_to_a_registry_with_the_api_says_nothing_of_the_api():
    from core.errors import NameUnknown

    unknown = {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]}
    client, seen = plain_client(lambda request: httpx.Response(404, json=unknown))
    for _ in range(2):
        with pytest.raises(NameUnknown):
            client.referrers("library/nothing", SUBJECT)
    assert len(seen) == 2


def test_a_referrers_link_to_anywhere_else_is_not_followed():
    elsewhere = '<https://elsewhere.example/v2/library/app/referrers/x>; rel="next"'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [referrer(1)]},
                              headers={"content-type": OCI_INDEX, "link": elsewhere})  # fmt: skip

    client, seen = plain_client(handler)
    answer = client.referrers("library/app", SUBJECT)
    assert answer is not None and len(json.loads(answer.data)["manifests"]) == 1 and len(seen) == 1


@pytest.mark.parametrize("body", [b"<html>busy</html>", b"[1, 2]"], ids=["not JSON", "not an object"])
def test_an_unreadable_referrers_answer_is_the_upstreams_failure_not_an_empty_list(body: bytes):
    """An answer that is no index must not read as "no referrers" (a policy controller would take the image for
    unsigned): the client is told to retry, and the cache serves what it had."""
    client, _ = plain_client(lambda request: httpx.Response(200, content=body, headers={"content-type": OCI_INDEX}))
    with pytest.raises(Unavailable):
        client.referrers("library/app", SUBJECT)
