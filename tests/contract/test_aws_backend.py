"""The AWS backend (S3 + DynamoDB, emulated by moto) against the same storage contracts as the local backend."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws

from core.digest import Digest
from core.errors import DigestMismatch, Unavailable
from core.filling import store_bytes
from core.ports import FillJob, Redirect
from handlers.composition.aws import AwsClients, clients_for, ensure_resources
from handlers.settings import AwsSettings
from pullthrough_adapters.aws.dynamodb_metadata_store import DynamoMetadataStore
from pullthrough_adapters.aws.filler import LeasedFiller
from pullthrough_adapters.aws.s3_blob_store import MIN_PART_SIZE, S3BlobStore
from tests.contract.blob_filler_contract import BlobFillerContract, Parts
from tests.contract.blob_store_contract import BlobStoreContract
from tests.contract.metadata_store_contract import METADATA_CONTRACTS

SECRET = "not-a-real-secret-key"
SETTINGS = AwsSettings(table="pullthrough-test", bucket="pullthrough-test", sync_fill_max_bytes=1 << 20)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDTESTING", "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_DEFAULT_REGION": "eu-west-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    clients_for.cache_clear()  # clients made under another test's mock would outlive it
    with mock_aws():
        ensure_resources(SETTINGS)
        yield


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, aws: None) -> S3BlobStore:
        return S3BlobStore(AwsClients(SETTINGS).s3, SETTINGS.bucket)

    def test_large_content_goes_up_in_parts_and_is_completed_only_when_verified(self, store: S3BlobStore):
        data = bytes(range(256)) * (MIN_PART_SIZE // 256 * 2 + 1000)  # two full parts and a tail
        digest = Digest.of(data)
        writer = store.writer(digest)
        for offset in range(0, len(data), 1 << 20):
            writer.write(data[offset : offset + (1 << 20)])
        assert not store.exists(digest)  # parts uploaded, nothing visible
        writer.commit()
        assert store.read(digest) == data
        client = boto3.client("s3")
        assert client.list_multipart_uploads(Bucket=SETTINGS.bucket).get("Uploads", []) == []

        wrong = store.writer(Digest.of(b"something else"))
        for offset in range(0, len(data), 1 << 20):
            wrong.write(data[offset : offset + (1 << 20)])
        with pytest.raises(DigestMismatch):
            wrong.commit()
        assert client.list_multipart_uploads(Bucket=SETTINGS.bucket).get("Uploads", []) == []
        assert client.list_objects_v2(Bucket=SETTINGS.bucket)["KeyCount"] == 1

    def test_small_content_carries_its_sha256_for_s3_to_check(self, aws: None):
        client = boto3.client("s3")
        sent: list[dict[str, object]] = []
        client.meta.events.register("provide-client-params.s3.PutObject", lambda params, **_: sent.append(params))
        store = S3BlobStore(client, SETTINGS.bucket)
        store_bytes(store, Digest.of(b"config"), b"config")
        assert base64.b64decode(str(sent[0]["ChecksumSHA256"])) == hashlib.sha256(b"config").digest()
        assert sent[0]["IfNoneMatch"] == "*"

    def test_redirects_are_signed_for_the_method_and_expire(self, store: S3BlobStore):
        digest = Digest.of(b"x")
        store_bytes(store, digest, b"x")
        for head, method in ((False, "GET"), (True, "HEAD")):
            located = store.locate(digest, head=head)
            assert isinstance(located, Redirect)
            url = urlsplit(located.url)
            query = parse_qs(url.query)
            assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["600"]
            assert SECRET not in located.url
            # regional, virtual-hosted: the form that works in every region (and is not under our own domain)
            assert url.hostname == f"{SETTINGS.bucket}.s3.eu-west-1.amazonaws.com"
            assert url.path == f"/{store.key(digest)}"
            # boto3 signs the method into the URL; the same URL asked with the other method must differ
            other = store.locate(digest, head=not head)
            assert isinstance(other, Redirect) and other.url != located.url, method

    def test_a_verifying_store_redirects_only_to_objects_its_bucket_holds(self, aws: None):
        """A replica Region's stack: one HEAD before the first redirect to an object, remembered for SEEN_SECONDS."""
        from pullthrough_adapters.aws.s3_blob_store import SEEN_SECONDS

        client = AwsClients(SETTINGS).s3
        now = [0.0]
        store = S3BlobStore(client, SETTINGS.bucket, verify_stored=True, clock=lambda: now[0])
        present, absent = Digest.of(b"here"), Digest.of(b"not here")
        store_bytes(store, present, b"here")
        assert store.locate(absent, head=False) is None
        assert isinstance(store.locate(present, head=False), Redirect)
        client.delete_object(Bucket=SETTINGS.bucket, Key=store.key(present))
        assert isinstance(store.locate(present, head=True), Redirect)  # remembered: no HEAD per request
        now[0] = SEEN_SECONDS
        assert store.locate(present, head=False) is None  # asked again once that is old
        assert isinstance(S3BlobStore(client, SETTINGS.bucket).locate(absent, head=False), Redirect)  # not verifying

    def test_presigned_urls_never_outlive_the_signing_credentials(self, aws: None):
        import time

        client = AwsClients(SETTINGS).s3
        expiring = S3BlobStore(client, SETTINGS.bucket, credentials_expiry=lambda: time.time() + 300)
        digest = Digest.of(b"y")
        store_bytes(expiring, digest, b"y")
        located = expiring.locate(digest, head=False)
        assert isinstance(located, Redirect)
        assert int(parse_qs(urlsplit(located.url).query)["X-Amz-Expires"][0]) <= 240


class RefusingDispatcher:
    def dispatch(self, job: FillJob, lease_owner: str) -> None:
        raise AssertionError(f"{job.digest} is small: the request copies it itself")


class TestLeasedFiller(BlobFillerContract):
    @pytest.fixture
    def parts(self, aws: None) -> Parts:
        clients = AwsClients(SETTINGS)
        store, state = S3BlobStore(clients.s3, SETTINGS.bucket), DynamoMetadataStore(clients.dynamodb, SETTINGS.table)
        return LeasedFiller(store, state, RefusingDispatcher(), sync_max_bytes=1 << 30, poll_seconds=0.02), store, state


class TestDynamoMetadataStore(*METADATA_CONTRACTS):
    @pytest.fixture
    def store(self, aws: None, clock) -> DynamoMetadataStore:
        return DynamoMetadataStore(AwsClients(SETTINGS).dynamodb, SETTINGS.table, clock=clock)

    def test_items_follow_the_documented_key_design(self, store: DynamoMetadataStore):
        from tests.contract.metadata_store_contract import tag_record

        store.put_tag("up", "library/app", "v1", tag_record())
        store.acquire_lease("fill/x", "me", 30)
        items = boto3.client("dynamodb").scan(TableName=SETTINGS.table)["Items"]
        keys = sorted((item["pk"]["S"], item["sk"]["S"]) for item in items)
        assert keys == [("LEASE#fill/x", "-"), ("REPOSITORIES", "up#library/app"), ("TAG#up#library/app", "v1")]
        lease = next(item for item in items if item["pk"]["S"].startswith("LEASE#"))
        assert "expires_at" in lease  # the table's TTL attribute

    def test_a_revalidated_tag_is_one_write(self, aws: None):
        from tests.contract.metadata_store_contract import tag_record

        client = boto3.client("dynamodb")
        puts: list[str] = []
        client.meta.events.register("provide-client-params.dynamodb.PutItem",
                                    lambda params, **_: puts.append(params["Item"]["pk"]["S"]))  # fmt: skip
        store = DynamoMetadataStore(client, SETTINGS.table)
        store.put_tag("up", "library/app", "v1", tag_record())
        assert puts == ["TAG#up#library/app", "REPOSITORIES"]
        puts.clear()
        store.put_tag("up", "library/app", "v1", tag_record(checked_at=2000.0))
        assert puts == ["TAG#up#library/app"]  # the repository is indexed already


def test_storage_failures_are_the_service_unavailable_and_leave_no_upload_behind(aws: None):
    from tests.contract.metadata_store_contract import tag_record

    clients = AwsClients(SETTINGS)
    blobs = S3BlobStore(clients.s3, "no-such-bucket")
    data = b"x" * (MIN_PART_SIZE + 1)
    with pytest.raises(Unavailable):  # the first part cannot go up
        blobs.writer(Digest.of(data)).write(data)
    with pytest.raises(Unavailable):
        store_bytes(blobs, Digest.of(b"small"), b"small")
    with pytest.raises(Unavailable):
        blobs.read(Digest.of(b"small"))
    metadata = DynamoMetadataStore(clients.dynamodb, "no-such-table")
    calls = [
        lambda: metadata.get_tag("up", "app", "v1"),
        lambda: metadata.put_tag("up", "app", "v1", tag_record()),
        lambda: metadata.stale_tags("up", 0.0, 0.0, 10),
        lambda: metadata.list_rules(),
        lambda: metadata.get_breaker("https://up.example"),
        lambda: metadata.count_breaker_failure("https://up.example", "UNAVAILABLE", "down", 60),
        lambda: metadata.increment_counter("misses/ci/1", 100.0),
    ]
    for call in calls:
        with pytest.raises(Unavailable):
            call()


def test_rules_cli_works_against_the_table(aws: None, tmp_path):
    import json

    from click.testing import CliRunner

    from handlers.cli import main

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "rules:\n"
        "  - {prefix: hub, upstream: 'https://registry-1.docker.io', library_namespace: true, credentials: 'env:HUB'}\n"
        "  - {prefix: '', upstream: 'https://mirror.example', tag_ttl_seconds: 60}\n"
    )
    runner = CliRunner()
    applied = runner.invoke(main, ["rules", "apply", str(rules_file), "--table", SETTINGS.table])
    assert applied.exit_code == 0, applied.output
    created = runner.invoke(main, ["rules", "create", "ghcr", "--preset", "ghcr", "--table", SETTINGS.table])
    assert created.exit_code == 0, created.output
    listed = runner.invoke(main, ["rules", "describe", "--table", SETTINGS.table, "--output", "json"])
    assert json.loads(listed.output) == [
        {"prefix": "", "upstream": "https://mirror.example", "tag_ttl_seconds": 60},
        {"prefix": "ghcr", "upstream": "https://ghcr.io"},
        {"prefix": "hub", "upstream": "https://registry-1.docker.io", "library_namespace": True,
         "credentials": "env:HUB"},
    ]  # fmt: skip
