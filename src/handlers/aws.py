"""Composition root of the serverless mode: S3, DynamoDB and Lambda, built once per Lambda container."""

from __future__ import annotations

import functools
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from adapters.aws.dispatch import LambdaDispatcher, ThreadDispatcher
from adapters.aws.dynamodb_metadata_store import TABLE_SCHEMA, DynamoMetadataStore
from adapters.aws.filler import FillDispatcher, LeasedFiller
from adapters.aws.s3_blob_store import S3BlobStore
from adapters.aws.signing_keys import SecretSigningKeys
from adapters.upstream.client import HttpUpstreams
from core.auth import Authenticator, TokenService
from core.cache import PullThroughCache
from core.ports import Metrics
from core.rules import ReloadingRules, RuleSet
from handlers.config import TOKEN_SERVICE, preset_rules, with_stored_rules

RULES_RELOAD_SECONDS = 60.0
FILL_LEASE_SECONDS = 900.0  # the fill function's own timeout


@dataclass(frozen=True)
class AwsSettings:
    table: str
    bucket: str
    fill_function: str | None
    builtin_rules: str
    sync_fill_max_bytes: int
    presign_seconds: int
    endpoint_url: str | None  # set when S3 and DynamoDB are emulated (moto), never on AWS
    fill_in_process: bool  # the local emulation runs the fill function in a thread
    miss_budget: int = 600  # upstream misses per client per minute (0: no limit)

    @classmethod
    def for_table(cls, table: str) -> AwsSettings:
        """Just enough to manage a deployment's table from the CLI."""
        return cls(table, "", None, "", 0, 0, os.environ.get("AWS_ENDPOINT_URL") or None, False)

    @classmethod
    def from_environment(cls) -> AwsSettings:
        env = os.environ
        return cls(
            table=env["PULLTHROUGH_TABLE_NAME"],
            bucket=env["PULLTHROUGH_BUCKET_NAME"],
            fill_function=env.get("PULLTHROUGH_FILL_FUNCTION_NAME") or None,
            builtin_rules=env.get("PULLTHROUGH_BUILTIN_RULES", ""),
            sync_fill_max_bytes=int(env.get("PULLTHROUGH_SYNC_FILL_MAX_BYTES", 64 << 20)),
            presign_seconds=int(env.get("PULLTHROUGH_PRESIGN_EXPIRY_SECONDS", 600)),
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            fill_in_process=env.get("PULLTHROUGH_FILL_IN_PROCESS") == "1",
            miss_budget=int(env.get("PULLTHROUGH_MISS_BUDGET", 600)),
        )


class AwsClients:
    def __init__(self, settings: AwsSettings) -> None:
        self.session = boto3.session.Session()
        retries = {"max_attempts": 3, "mode": "standard"}
        # Presigned URLs must name the regional virtual-hosted endpoint on AWS; an emulator on 127.0.0.1 needs paths.
        addressing = "path" if settings.endpoint_url else "virtual"
        self.s3 = self.session.client(
            "s3", config=Config(signature_version="s3v4", s3={"addressing_style": addressing}, retries=retries)
        )
        self.dynamodb = self.session.client("dynamodb", config=Config(retries=retries))
        self._settings = settings

    def lambda_client(self) -> Any:
        return self.session.client("lambda")

    def events_client(self) -> Any:
        return self.session.client("events")

    def credentials_expiry(self) -> float | None:
        credentials = self.session.get_credentials()
        expiry = getattr(credentials, "_expiry_time", None)
        return expiry.timestamp() if expiry is not None else None


@functools.cache
def clients_for(settings: AwsSettings) -> AwsClients:
    """One session and one set of clients per container: the cache, the authenticator and the event sink share them
    (creating a client costs tens of milliseconds of cold start)."""
    return AwsClients(settings)


def build_aws_cache(settings: AwsSettings, metrics: Metrics) -> PullThroughCache:
    clients = clients_for(settings)
    metadata = DynamoMetadataStore(clients.dynamodb, settings.table)
    blobs = S3BlobStore(
        clients.s3, settings.bucket, presign_seconds=settings.presign_seconds,
        credentials_expiry=clients.credentials_expiry,
    )  # fmt: skip
    builtins = preset_rules(settings.builtin_rules)
    rules = ReloadingRules(lambda: with_stored_rules(builtins, metadata.list_rules()), RULES_RELOAD_SECONDS)
    filler = LeasedFiller(blobs, metadata, _dispatcher(settings, clients), sync_max_bytes=settings.sync_fill_max_bytes)
    return PullThroughCache(rules, metadata, blobs, HttpUpstreams(), filler, metrics=metrics)


def _dispatcher(settings: AwsSettings, clients: AwsClients) -> FillDispatcher:
    if settings.fill_in_process:
        return ThreadDispatcher(_run_fill_handler)
    return LambdaDispatcher(clients.lambda_client, settings.fill_function)


def _run_fill_handler(event: dict[str, str]) -> object:
    from handlers import fill  # the fill function's module, imported when first needed, as Lambda would
    from handlers.lambda_local import LocalContext

    return fill.handler(event, LocalContext(function_name="pullthrough-fill-local", deadline=time.monotonic() + 900))


def ensure_resources(settings: AwsSettings) -> None:
    """Create the table and bucket when missing, as the SAM template would: for emulators and first runs."""
    clients = clients_for(settings)
    existing_tables = clients.dynamodb.list_tables()["TableNames"]
    if settings.table not in existing_tables:
        clients.dynamodb.create_table(TableName=settings.table, BillingMode="PAY_PER_REQUEST", **TABLE_SCHEMA)
        clients.dynamodb.get_waiter("table_exists").wait(TableName=settings.table)
    existing_buckets = {bucket["Name"] for bucket in clients.s3.list_buckets()["Buckets"]}
    if settings.bucket not in existing_buckets:
        region = clients.s3.meta.region_name
        location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        clients.s3.create_bucket(Bucket=settings.bucket, **location)


def store_rules(settings: AwsSettings, rules: RuleSet) -> None:
    metadata = table_store(settings)
    for rule in rules:
        metadata.put_rule(rule)


def table_store(settings: AwsSettings) -> DynamoMetadataStore:
    return DynamoMetadataStore(clients_for(settings).dynamodb, settings.table)


def aws_authenticator(settings: AwsSettings) -> Authenticator | None:
    """Token mode (the template's default): pull keys in the table, signing keys in a Secrets Manager secret."""
    if os.environ.get("PULLTHROUGH_AUTH", "token") != "token":
        return None
    signing = SecretSigningKeys(os.environ["PULLTHROUGH_SIGNING_KEYS_SECRET"])
    return Authenticator(table_store(settings), TokenService(signing, service=TOKEN_SERVICE))


def ensure_signing_secret(settings: AwsSettings, name: str) -> str:
    """The signing-keys secret the template would create, for emulators and first runs; its ARN."""
    client = clients_for(settings).session.client("secretsmanager")
    try:
        return str(client.describe_secret(SecretId=name)["ARN"])
    except client.exceptions.ResourceNotFoundException:
        document = {"keys": [{"kid": "initial", "secret": secrets.token_hex(32)}]}
        return str(client.create_secret(Name=name, SecretString=json.dumps(document))["ARN"])
