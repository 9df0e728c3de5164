"""Composition root of the serverless mode: S3, DynamoDB and Lambda, built once per Lambda container. The clients,
stores and cache every function shares, and the fill function, are built here. The others each have a module, so
that a cold start imports only its own function's parts: the registry (aws_http) and the rules admin (aws_admin)
behind HTTP, the scheduled refresh and sweep (aws_scheduled)."""

from __future__ import annotations

import functools
import json
import secrets
import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from core.auth import Authenticator, TokenService
from core.cache import PullThroughCache
from core.ports import Metrics, Upstream, Upstreams
from core.recent_manifests import RecentManifests
from core.rules import ReloadingRules, Rule, RuleSet, RuleSource
from handlers.composition.powertools import PowertoolsMetrics, instrumented, logger
from handlers.presets import preset_rules, with_stored_rules
from handlers.settings import TOKEN_SERVICE, AwsSettings, UpstreamSettings
from pullthrough_adapters.aws.dispatch import LambdaDispatcher
from pullthrough_adapters.aws.dynamodb_metadata_store import TABLE_SCHEMA, DynamoMetadataStore
from pullthrough_adapters.aws.filler import FillDispatcher, LeasedFiller, complete_hand_over
from pullthrough_adapters.aws.s3_blob_store import S3BlobStore
from pullthrough_adapters.aws.signing_keys import SecretSigningKeys
from pullthrough_adapters.upstream.addresses import AddressPolicy

RULES_RELOAD_SECONDS = 60.0
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


class AwsClients:
    """A session's clients, each made when a function first asks for it (creating one costs tens of milliseconds of
    cold start): the functions that serve requests make theirs at import, the admin function never makes S3's."""

    RETRIES = Config(retries={"max_attempts": 3, "mode": "standard"})

    def __init__(self, settings: AwsSettings) -> None:
        self.session = boto3.session.Session()
        # Presigned URLs must name the regional virtual-hosted endpoint on AWS; an emulator on 127.0.0.1 needs paths.
        self._addressing = "path" if settings.endpoint_url else "virtual"

    @functools.cached_property
    def s3(self) -> Any:
        addressing = Config(signature_version="s3v4", s3={"addressing_style": self._addressing})
        return self.session.client("s3", config=self.RETRIES.merge(addressing))

    @functools.cached_property
    def dynamodb(self) -> Any:
        return self.session.client("dynamodb", config=self.RETRIES)

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


def table_store(settings: AwsSettings) -> DynamoMetadataStore:
    return DynamoMetadataStore(clients_for(settings).dynamodb, settings.table)


def blob_store(settings: AwsSettings) -> S3BlobStore:
    clients = clients_for(settings)
    return S3BlobStore(clients.s3, settings.bucket, presign_seconds=settings.presign_seconds,
                       credentials_expiry=clients.credentials_expiry,
                       verify_stored=settings.verify_stored_bytes)  # fmt: skip


def build_cache(settings: AwsSettings, metrics: Metrics, dispatcher: FillDispatcher | None = None) -> PullThroughCache:
    """The cache of one container. `dispatcher` starts the fill function (default: an asynchronous invocation)."""
    clients = clients_for(settings)
    metadata, blobs = table_store(settings), blob_store(settings)
    rules = rule_source(settings)
    dispatcher = dispatcher or LambdaDispatcher(clients.lambda_client, settings.fill_function)
    filler = LeasedFiller(blobs, metadata, dispatcher, sync_max_bytes=settings.sync_fill_max_bytes)
    upstreams = UpstreamsOnFirstMiss(settings.upstream)
    return PullThroughCache(rules, metadata, blobs, upstreams, filler, metrics=metrics, recent=RecentManifests())


class UpstreamsOnFirstMiss:
    """The upstream client, imported and made on the first miss: httpx and its kin are 25 ms of a cold start, which
    a container answering hits never needs."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        self._upstreams: Upstreams | None = None
        self._lock = threading.Lock()

    def for_rule(self, rule: Rule) -> Upstream:
        if self._upstreams is None:
            with self._lock:
                if self._upstreams is None:
                    from pullthrough_adapters.upstream.client import HttpUpstreams

                    policy = AddressPolicy(self._settings.allow_private)
                    self._upstreams = HttpUpstreams(policy, self._settings.timeout_seconds)
        return self._upstreams.for_rule(rule)


def rule_source(settings: AwsSettings) -> RuleSource:
    """The built-in rules the template enables (with its expiry for them), the table's rules on top, reloaded."""
    metadata = table_store(settings)
    builtins = preset_rules(settings.builtin_rules, settings.builtin_expire_unpulled)
    return ReloadingRules(lambda: with_stored_rules(builtins, metadata.list_rules()), RULES_RELOAD_SECONDS)


def authenticator(settings: AwsSettings) -> Authenticator | None:
    """Token mode (the template's default): pull keys in the table, signing keys in a Secrets Manager secret."""
    if settings.auth != "token":
        return None
    if not settings.signing_keys_secret:
        raise ValueError("token mode needs PULLTHROUGH_SIGNING_KEYS_SECRET")
    signing = SecretSigningKeys(settings.signing_keys_secret)
    return Authenticator(table_store(settings), TokenService(signing, service=TOKEN_SERVICE))


def fill_handler(settings: AwsSettings) -> LambdaHandler:
    """The blob fill function: copies one blob into S3 for up to 15 minutes, for a request that could not wait. The
    request took the fill lease and handed it over (see pullthrough_adapters.aws.filler)."""
    cache = build_cache(settings, PowertoolsMetrics())
    metadata, blobs = table_store(settings), blob_store(settings)

    def fill(event: dict[str, str], context: Any) -> dict[str, Any]:
        order = cache.fill_order(event["name"], event["digest"])
        size = complete_hand_over(order, blobs, metadata, event["lease_owner"])  # counts UpstreamBytes
        if size is None:
            logger.info("another filler holds the lease", extra={"digest": event["digest"]})
        return {"name": event["name"], "digest": event["digest"], "size": size}

    return instrumented(fill)


# -- emulators and first runs ------------------------------------------------------------------------------------


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


def ensure_signing_secret(settings: AwsSettings, name: str) -> str:
    """The signing-keys secret the template would create, for emulators and first runs; its ARN."""
    client = clients_for(settings).session.client("secretsmanager")
    try:
        return str(client.describe_secret(SecretId=name)["ARN"])
    except client.exceptions.ResourceNotFoundException:
        document = {"keys": [{"kid": "initial", "secret": secrets.token_hex(32)}]}
        return str(client.create_secret(Name=name, SecretString=json.dumps(document))["ARN"])


def store_rules(settings: AwsSettings, rules: RuleSet) -> None:
    metadata = table_store(settings)
    for rule in rules:
        metadata.put_rule(rule)
