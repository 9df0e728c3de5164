"""The deploy options under moto (server mode, so that a real HTTP client follows the presigned URLs): a bucket
encrypted with a customer managed KMS key, as the template configures it with KmsKeyArn.

moto 5 records an object's KMS key but does not evaluate KMS permissions (its S3 model never consults KMS policies
or grants), so the decrypt permission a presigned GET needs is asserted on the template instead
(test_template.py::test_a_customer_managed_key_encrypts_bytes_records_and_signing_keys)."""

from __future__ import annotations

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
