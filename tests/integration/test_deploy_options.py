"""The deploy options under moto (server mode, so that a real HTTP client follows the presigned URLs): a bucket
encrypted with a customer managed KMS key, as the template configures it with KmsKeyArn.

moto 5 records an object's KMS key but does not evaluate KMS permissions (its S3 model never consults KMS policies
or grants), so the decrypt permission a presigned GET needs is asserted on the template instead
(test_template.py::test_a_customer_managed_key_encrypts_bytes_records_and_signing_keys)."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from core.digest import Digest
from core.filling import store_bytes
from core.ports import Redirect
from pullthrough_adapters.aws.s3_blob_store import MIN_PART_SIZE, S3BlobStore
from tests.support.moto import MotoServer

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return moto


def s3_client():  # as the functions make it (composition.aws.AwsClients), path-style for an emulator
    from botocore.config import Config

    return boto3.client("s3", config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


def test_sse_kms_objects_are_written_encrypted_and_served_by_presigned_urls(aws: MotoServer, tmp_path: Path):
    key = boto3.client("kms").create_key(Description="pullthrough test")["KeyMetadata"]["Arn"]
    s3, bucket = s3_client(), f"pt-kms-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
        "BucketKeyEnabled": True}]})  # fmt: skip
    store = S3BlobStore(s3, bucket)
    small, large = b'{"schemaVersion": 2}', os.urandom(MIN_PART_SIZE + (1 << 20))  # one PUT, a multipart upload
    for data in (small, large):
        digest = Digest.of(data)
        store_bytes(store, digest, data)
        head = s3.head_object(Bucket=bucket, Key=store.key(digest))
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == key
        assert head["BucketKeyEnabled"] is True
        located = store.locate(digest, head=False)
        assert isinstance(located, Redirect)
        answer = httpx.get(located.url, timeout=30)
        assert answer.status_code == 200 and Digest.of(answer.content) == digest
        probe = store.locate(digest, head=True)
        assert isinstance(probe, Redirect)
        assert int(httpx.head(probe.url, timeout=30).headers["content-length"]) == len(data)


# -- replicas in other Regions ----------------------------------------------------------------------------------------

PRIMARY, REPLICA = "us-east-1", "eu-west-1"
LAYER = b"replicated layer " * 4096


def replicate(table: str, source_bucket: str, target_bucket: str) -> None:
    """What the template's replication does, done by hand: the global table's items reach the replica Region's
    table of the same name; the bucket's objects reach the replica Region's bucket."""
    source = boto3.client("dynamodb", region_name=PRIMARY)
    target = boto3.client("dynamodb", region_name=REPLICA)
    for page in source.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            target.put_item(TableName=table, Item=item)
    s3_source, s3_target = boto3.client("s3", region_name=PRIMARY), boto3.client("s3", region_name=REPLICA)
    for page in s3_source.get_paginator("list_objects_v2").paginate(Bucket=source_bucket):
        for entry in page.get("Contents", []):
            body = s3_source.get_object(Bucket=source_bucket, Key=entry["Key"])["Body"].read()
            s3_target.put_object(Bucket=target_bucket, Key=entry["Key"], Body=body)


def test_a_replica_region_serves_what_the_primary_cached_and_fills_what_its_bucket_lacks(
    aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import json

    from core.rules import Rule, RuleSet
    from handlers.composition.aws import clients_for, ensure_resources, store_rules
    from handlers.composition.aws_http import registry_handler
    from handlers.devtools.lambda_emulator import LocalContext
    from handlers.settings import AwsSettings, UpstreamSettings
    from tests.contract.test_upstreams import REPOSITORY, image_document, push_with_the_registry_api
    from tests.support.upstream import DistributionRegistry

    events = Path(__file__).resolve().parents[2] / "events"

    def request(handler, kind: str, path: str) -> dict:
        event = json.loads((events / f"api-{kind}-get.json").read_text())
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        return handler(event, LocalContext())

    name = f"pt-{uuid.uuid4().hex[:12]}"
    with DistributionRegistry(tmp_path / "upstream") as upstream:
        manifest = json.dumps(image_document(Digest.of(b"{}"), Digest.of(LAYER), len(LAYER))).encode()
        push_with_the_registry_api(upstream.url, [b"{}", LAYER], manifest, ("v1",))
        layer_path = f"/v2/up/{REPOSITORY}/blobs/{Digest.of(LAYER)}"

        def stack(region: str, bucket: str, *, replica: bool):
            monkeypatch.setenv("AWS_DEFAULT_REGION", region)
            settings = AwsSettings(table=name, bucket=bucket, auth="none", endpoint_url=aws.url,
                                   upstream=UpstreamSettings(allow_private=True),  # the upstream is on 127.0.0.1
                                   verify_stored_bytes=replica)  # fmt: skip
            clients_for.cache_clear()
            ensure_resources(settings)
            return settings, registry_handler(dataclasses.replace(settings))

        primary, primary_handler = stack(PRIMARY, f"{name}-{PRIMARY}", replica=False)
        store_rules(primary, RuleSet([Rule("up", upstream.url)]))
        assert request(primary_handler, "manifest", f"/v2/up/{REPOSITORY}/manifests/v1")["statusCode"] == 200
        assert request(primary_handler, "blob", layer_path)["statusCode"] == 307

        replica, replica_handler = stack(REPLICA, f"{name}-{REPLICA}", replica=True)
        replicate(name, primary.bucket, replica.bucket)
        mark = upstream.mark()
        served = request(replica_handler, "manifest", f"/v2/up/{REPOSITORY}/manifests/v1")
        assert served["statusCode"] == 200 and served["body"].encode() == manifest
        redirect = request(replica_handler, "blob", layer_path)
        assert redirect["statusCode"] == 307 and f"/{replica.bucket}/" in redirect["headers"]["location"]
        assert Digest.of(httpx.get(redirect["headers"]["location"]).content) == Digest.of(LAYER)
        assert upstream.requests_since(mark) == []  # what the primary cached, served by the replica Region alone

        # A record whose bytes the replica's bucket lacks (not replicated yet, or expired by its lifecycle): the
        # replica fills it from the upstream rather than redirect to nothing.
        layer_key = f"blobs/sha256/{Digest.of(LAYER).encoded}"
        boto3.client("s3", region_name=REPLICA).delete_object(Bucket=replica.bucket, Key=layer_key)
        refilled = request(registry_handler(replica), "blob", layer_path)
        assert refilled["statusCode"] == 307 and f"/{replica.bucket}/" in refilled["headers"]["location"]
        assert Digest.of(httpx.get(refilled["headers"]["location"]).content) == Digest.of(LAYER)
        assert [entry.method for entry in upstream.requests_since(mark)] == ["GET"]
