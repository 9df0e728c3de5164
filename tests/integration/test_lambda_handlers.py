"""The Lambda entry points, invoked in-process with the sample events in events/, S3 and DynamoDB emulated by moto
and a real upstream registry behind the rule."""

from __future__ import annotations

import base64
import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from moto import mock_aws

from core.digest import Digest
from core.rules import Rule, RuleSet
from handlers.composition.aws import clients_for, ensure_resources, store_rules
from handlers.devtools.lambda_emulator import LocalContext
from handlers.settings import AwsSettings
from tests.contract.test_upstreams import image_document, push_with_the_registry_api
from tests.support.upstream import DistributionRegistry

EVENTS = Path(__file__).resolve().parents[2] / "events"
REPOSITORY = "library/contract"  # what push_with_the_registry_api pushes
LAYER = b"layer bytes " * 1000
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "PULLTHROUGH_TABLE_NAME": "pullthrough", "PULLTHROUGH_BUCKET_NAME": "pullthrough",
    "PULLTHROUGH_FILL_FUNCTION_NAME": "pullthrough-fill", "PULLTHROUGH_BUILTIN_RULES": "",
    "POWERTOOLS_SERVICE_NAME": "pullthrough", "POWERTOOLS_METRICS_NAMESPACE": "Pullthrough",
    "POWERTOOLS_TRACE_DISABLED": "true", "PULLTHROUGH_ALLOW_PRIVATE_UPSTREAMS": "1", "PULLTHROUGH_AUTH": "none",
    "PULLTHROUGH_SWEEP_GRACE_SECONDS": "0",
}  # fmt: skip


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DistributionRegistry, bytes]]:
    with DistributionRegistry(tmp_path_factory.mktemp("upstream")) as registry:
        manifest = json.dumps(image_document(Digest.of(b"{}"), Digest.of(LAYER), len(LAYER))).encode()
        push_with_the_registry_api(registry.url, [b"{}", LAYER], manifest, ("v1",))
        yield registry, manifest


@pytest.fixture(scope="module")
def handlers(seeded) -> Iterator[dict[str, ModuleType]]:
    registry, _ = seeded
    saved = {name: os.environ.get(name) for name in ENVIRONMENT}
    os.environ.update(ENVIRONMENT)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    try:
        clients_for.cache_clear()
        with mock_aws():
            settings = AwsSettings.from_environment()
            ensure_resources(settings)
            store_rules(settings, RuleSet([Rule("up", registry.url, tag_ttl_seconds=1),
                                           Rule("exp", registry.url, expire_unpulled=1),
                                           Rule("warm", registry.url)]))  # fmt: skip
            modules = {}
            for name, module in (("lambda_api", "api"), ("fill", "fill"), ("refresh", "refresh"), ("sweep", "sweep")):
                sys.modules.pop(f"handlers.functions.{module}", None)
                modules[name] = importlib.import_module(f"handlers.functions.{module}")
            yield modules
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def event(name: str, path: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EVENTS / name).read_text())
    if path is not None:
        document["rawPath"] = document["requestContext"]["http"]["path"] = path
    return document


def body(response: dict[str, Any]) -> bytes:
    raw = response.get("body") or ""
    return base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()


def test_ping(handlers):
    response = handlers["lambda_api"].handler(event("api-v2-ping.json"), LocalContext())
    assert response["statusCode"] == 200 and body(response) == b"{}"
    assert response["headers"]["docker-distribution-api-version"] == "registry/2.0"


def test_manifest_get_is_byte_exact_text_with_registry_headers(handlers, seeded):
    _, manifest = seeded
    response = handlers["lambda_api"].handler(
        event("api-manifest-get.json", f"/v2/up/{REPOSITORY}/manifests/v1"), LocalContext()
    )
    assert response["statusCode"] == 200
    assert response["isBase64Encoded"] is False  # a text body: API Gateway relays it as is
    assert body(response) == manifest
    headers = response["headers"]
    assert headers["docker-content-digest"] == str(Digest.of(manifest))
    assert headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    assert headers["content-length"] == str(len(manifest))


def test_behind_the_load_balancer_the_same_handler_answers_alb_events(handlers, seeded):
    """Private mode: the internal load balancer's events (multi-value headers, no API Gateway context) get the same
    answers, headers passed as they are."""
    _, manifest = seeded
    document = json.loads((EVENTS / "alb-manifest-get.json").read_text())
    document["path"] = f"/v2/up/{REPOSITORY}/manifests/v1"
    response = handlers["lambda_api"].handler(document, LocalContext())
    assert response["statusCode"] == 200 and body(response) == manifest
    headers = response["multiValueHeaders"]
    assert headers["docker-content-digest"] == [str(Digest.of(manifest))]
    assert headers["content-type"] == ["application/vnd.oci.image.manifest.v1+json"]
    document["path"] = f"/v2/up/{REPOSITORY}/manifests/sha256:nope"
    assert handlers["lambda_api"].handler(document, LocalContext())["statusCode"] == 400


def test_behind_the_load_balancer_token_clients_are_sent_to_the_configured_url(handlers):
    """An ALB event names no domain: in private mode the template sets PULLTHROUGH_PUBLIC_URL, and the challenge
    (which the load balancer passes unchanged, unlike a REST API) names the token endpoint there."""
    import dataclasses

    import boto3

    from handlers.composition.aws_http import registry_handler

    secret = boto3.client("secretsmanager").create_secret(
        Name="pullthrough-alb-test-keys", SecretString=json.dumps({"kid": "k1", "secret": "s" * 64})
    )["ARN"]
    settings = dataclasses.replace(AwsSettings.from_environment(), auth="token", signing_keys_secret=secret,
                                   public_url="https://registry.internal.example.com")  # fmt: skip
    document = json.loads((EVENTS / "alb-manifest-get.json").read_text())
    response = registry_handler(settings)(document, LocalContext())
    assert response["statusCode"] == 401
    (challenge,) = response["multiValueHeaders"]["www-authenticate"]
    assert challenge.startswith('Bearer realm="https://registry.internal.example.com/token",service=')


def test_manifest_head_has_length_and_digest_and_no_body(handlers, seeded):
    _, manifest = seeded
    response = handlers["lambda_api"].handler(
        event("api-manifest-head.json", f"/v2/up/{REPOSITORY}/manifests/v1"), LocalContext()
    )
    assert response["statusCode"] == 200 and body(response) == b""
    assert response["headers"]["content-length"] == str(len(manifest))
    assert response["headers"]["docker-content-digest"] == str(Digest.of(manifest))
    missing = handlers["lambda_api"].handler(
        event("api-manifest-head.json", f"/v2/up/{REPOSITORY}/manifests/nope"), LocalContext()
    )
    assert missing["statusCode"] == 404 and body(missing) == b""


def test_blob_get_redirects_to_a_presigned_s3_url(handlers):
    digest = Digest.of(LAYER)
    response = handlers["lambda_api"].handler(
        event("api-blob-get.json", f"/v2/up/{REPOSITORY}/blobs/{digest}"), LocalContext()
    )
    assert response["statusCode"] == 307 and body(response) == b""
    location = response["headers"]["location"]
    assert location.startswith(f"https://pullthrough.s3.amazonaws.com/blobs/sha256/{digest.encoded}?")
    assert "X-Amz-Signature=" in location and "X-Amz-Expires=600" in location


def test_warm_requests_make_no_needless_aws_call(handlers, seeded):
    """Counted through botocore's event hooks on the container's own clients: a repeated manifest by digest costs no
    call, a tag within its TTL one DynamoDB read, a blob one DynamoDB read and a presign made here."""
    _, manifest = seeded
    name = f"/v2/warm/{REPOSITORY}"
    requests = {
        "manifest by digest": ("api-manifest-get.json", f"{name}/manifests/{Digest.of(manifest)}"),
        "manifest by tag": ("api-manifest-get.json", f"{name}/manifests/v1"),
        "manifest HEAD by digest": ("api-manifest-head.json", f"{name}/manifests/{Digest.of(manifest)}"),
        "blob": ("api-blob-get.json", f"{name}/blobs/{Digest.of(LAYER)}"),
    }
    clients = clients_for(AwsSettings.from_environment())
    calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        calls.append(f"{model.service_model.service_name}:{model.name}")

    def ask(sample: str, path: str) -> None:
        assert handlers["lambda_api"].handler(event(sample, path), LocalContext())["statusCode"] in (200, 307)

    for sample, path in [*requests.values(), *requests.values()]:  # the first fill, read and record their pulls
        ask(sample, path)
    for client in (clients.s3, clients.dynamodb):
        client.meta.events.register("before-call", count)
    try:
        made = {}
        for label, (sample, path) in requests.items():
            calls.clear()
            ask(sample, path)
            made[label] = list(calls)
    finally:
        for client in (clients.s3, clients.dynamodb):
            client.meta.events.unregister("before-call", count)
    assert made == {
        "manifest by digest": [],
        "manifest by tag": ["dynamodb:GetItem"],
        "manifest HEAD by digest": [],
        "blob": ["dynamodb:GetItem"],
    }


def test_bad_requests_get_oci_errors(handlers):
    response = handlers["lambda_api"].handler(
        event("api-manifest-get.json", "/v2/up/library/x/manifests/sha256:nope"), LocalContext()
    )
    assert response["statusCode"] == 400
    assert json.loads(body(response))["errors"][0]["code"] == "DIGEST_INVALID"


def test_fill_function_copies_a_blob_under_the_lease(handlers, seeded):
    digest = Digest.of(b"{}")
    answer = handlers["fill"].handler(
        {"name": f"up/{REPOSITORY}", "digest": str(digest), "lease_owner": "request-1"}, LocalContext()
    )
    assert answer["size"] == 2
    registry, _ = seeded
    mark = registry.mark()
    again = handlers["fill"].handler(
        {"name": f"up/{REPOSITORY}", "digest": str(digest), "lease_owner": "request-2"}, LocalContext()
    )
    assert again["size"] == 2 and registry.requests_since(mark) == []  # already there: nothing fetched


def test_scheduled_event_runs_the_refresh_over_stale_pulled_tags(handlers, seeded):
    import time

    registry, _ = seeded
    pulled = handlers["lambda_api"].handler(
        event("api-manifest-head.json", f"/v2/up/{REPOSITORY}/manifests/v1"), LocalContext()
    )
    assert pulled["statusCode"] == 200
    time.sleep(1.1)  # the rule's TTL is one second
    mark = registry.mark()
    answer = handlers["refresh"].handler(event("scheduled-refresh.json"), LocalContext())
    assert answer == {"revalidated": 1, "unchanged": 1, "updated": 0, "deferred": 0, "failed": 0}
    assert [(entry.method, entry.path) for entry in registry.requests_since(mark)] == [
        ("HEAD", f"/v2/{REPOSITORY}/manifests/v1")
    ]


def test_the_sweep_function_forgets_what_nobody_pulled_and_deletes_its_objects(handlers, seeded):
    import time

    import boto3

    registry, _ = seeded
    config, layer = Digest.of(b"{}"), b"short-lived layer " * 500  # a layer no other test pulls
    manifest = json.dumps(image_document(config, Digest.of(layer), len(layer))).encode()
    push_with_the_registry_api(registry.url, [b"{}", layer], manifest, ("short-lived",))
    name = f"/v2/exp/{REPOSITORY}"
    pulled = handlers["lambda_api"].handler(event("api-manifest-get.json", f"{name}/manifests/short-lived"),
                                            LocalContext())  # fmt: skip
    assert pulled["statusCode"] == 200
    for digest in (config, Digest.of(layer)):
        redirect = handlers["lambda_api"].handler(event("api-blob-get.json", f"{name}/blobs/{digest}"), LocalContext())
        assert redirect["statusCode"] == 307
    shared = handlers["lambda_api"].handler(
        event("api-blob-get.json", f"/v2/up/{REPOSITORY}/blobs/{config}"), LocalContext()
    )
    assert shared["statusCode"] == 307  # the `up` rule (no expiry) now records the config too
    table = boto3.client("dynamodb")
    keys = {item["pk"]["S"] for item in table.scan(TableName="pullthrough")["Items"]}
    assert f"TAG#exp#{REPOSITORY}" in keys and f"BLOB#exp#{REPOSITORY}#{Digest.of(layer)}" in keys
    time.sleep(1.1)  # the rule's expire_unpulled is one second
    sweep_function = LocalContext(deadline=time.monotonic() + 900)  # SweepFunction's timeout
    answer = handlers["sweep"].handler({"source": "aws.scheduler"}, sweep_function)
    assert (answer["tags_forgotten"], answer["manifests_forgotten"], answer["blobs_forgotten"]) == (1, 1, 2)
    assert answer["expired"] == 1 and answer["deleted"] == 2  # the manifest and the layer; the config is still held
    keys = {item["pk"]["S"] for item in table.scan(TableName="pullthrough")["Items"]}
    assert not {key for key in keys if key.startswith(("TAG#exp#", "MANIFEST#exp#", "BLOB#exp#"))}
    assert f"BLOB#up#{REPOSITORY}#{config}" in keys
    s3 = boto3.client("s3")
    stored = {item["Key"] for item in s3.list_objects_v2(Bucket="pullthrough").get("Contents", [])}
    assert f"blobs/sha256/{config.encoded}" in stored
    assert not {f"blobs/sha256/{Digest.of(manifest).encoded}", f"blobs/sha256/{Digest.of(layer).encoded}"} & stored
