"""Composition root of the serverless mode: S3, DynamoDB and Lambda, built once per Lambda container. The fill and
refresh functions are built here; the two functions that serve HTTP (registry, admin) in aws_http, so that these
two never import FastAPI at a cold start."""

from __future__ import annotations

import functools
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from core.auth import Authenticator, TokenService
from core.cache import PullThroughCache
from core.lifecycle import Lifecycler
from core.ports import Metrics, Upstream, Upstreams
from core.recent_manifests import RecentManifests
from core.refresh import Refresher
from core.rules import ReloadingRules, Rule, RuleSet, RuleSource
from core.stats import Report, report
from handlers.composition.powertools import PowertoolsMetrics, instrumented, logger
from handlers.presets import preset_rules, with_stored_rules
from handlers.rules_file import load_rules
from handlers.settings import TOKEN_SERVICE, AwsSettings, UpstreamSettings
from pullthrough_adapters.aws.dispatch import LambdaDispatcher
from pullthrough_adapters.aws.dynamodb_metadata_store import TABLE_SCHEMA, DynamoMetadataStore
from pullthrough_adapters.aws.events import EventBridgeEvents
from pullthrough_adapters.aws.filler import FillDispatcher, LeasedFiller, complete_hand_over
from pullthrough_adapters.aws.s3_blob_store import S3BlobStore
from pullthrough_adapters.aws.signing_keys import SecretSigningKeys
from pullthrough_adapters.upstream.addresses import AddressPolicy

RULES_RELOAD_SECONDS = 60.0
# A sweep starts no repository with less than this left of the function's time: deleting the orphans of a full
# page and saving the cursor take well under it.
SWEEP_RESERVE_SECONDS = 120.0
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


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


def build_lifecycler(
    settings: AwsSettings,
    rules_file: Path | None = None,
    *,
    grace_seconds: float,
    dry_run: bool = False,
    metrics: Metrics | None = None,
) -> Lifecycler:
    """The sweep over the table and the bucket; with `rules_file` (`pullthrough gc --table`), its rules instead."""
    events = EventBridgeEvents(clients_for(settings).events_client())
    rules = load_rules(rules_file) if rules_file is not None else rule_source(settings)
    return Lifecycler(rules, table_store(settings), blob_store(settings), grace_seconds=grace_seconds, events=events,
                      metrics=metrics, dry_run=dry_run)  # fmt: skip


def build_report(settings: AwsSettings, rules_file: Path | None = None) -> Report:
    """`pullthrough stats --table`: the report over a deployment's table (its usage totals included)."""
    rules = load_rules(rules_file) if rules_file is not None else rule_source(settings)
    table = table_store(settings)
    return report(rules.current(), table, table, table, time.time())


def authenticator(settings: AwsSettings) -> Authenticator | None:
    """Token mode (the template's default): pull keys in the table, signing keys in a Secrets Manager secret."""
    if settings.auth != "token":
        return None
    if not settings.signing_keys_secret:
        raise ValueError("token mode needs PULLTHROUGH_SIGNING_KEYS_SECRET")
    signing = SecretSigningKeys(settings.signing_keys_secret)
    return Authenticator(table_store(settings), TokenService(signing, service=TOKEN_SERVICE))


# -- the functions without HTTP --------------------------------------------------------------------------------------


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


def refresh_handler(settings: AwsSettings) -> LambdaHandler:
    """The scheduled refresh function: revalidates stale tags that clients pulled recently, so their next pull is a
    hit. Bounded work per run (`refresh_limit` tags, least recently confirmed first); a tag it revalidated counts as
    confirmed, so the next run carries on with the rest. Two runs at once share the per-tag leases: one HEAD a tag."""
    counts = PowertoolsMetrics()
    events = EventBridgeEvents(clients_for(settings).events_client())
    refresher = Refresher(build_cache(settings, counts), table_store(settings), events, counts)
    window_seconds = settings.refresh_window_days * 86400

    def refresh(event: dict[str, Any], context: Any) -> dict[str, int]:
        outcomes = refresher.refresh_stale(pulled_within_seconds=window_seconds, limit=settings.refresh_limit)
        summary = Counter(outcome.status for outcome in outcomes)
        for outcome in outcomes:
            if outcome.status != "unchanged":
                logger.info("refreshed", extra={"tag": f"{outcome.name}:{outcome.tag}", "status": outcome.status,
                                                "digest": outcome.digest, "reason": outcome.reason})  # fmt: skip
        statuses = ("unchanged", "updated", "deferred", "failed")
        return {"revalidated": len(outcomes), **{status: summary[status] for status in statuses}}

    return instrumented(refresh)


def sweep_handler(settings: AwsSettings) -> LambdaHandler:
    """The scheduled lifecycle sweep: as many repositories as its time (and SweepRepositoriesPerRun) allows, going
    on where the last run stopped, then the orphaned bytes past their grace, deleted in batches. Each expired image
    is an "ECR Image Action" event on EventBridge."""
    lifecycler = build_lifecycler(settings, grace_seconds=settings.sweep_grace_seconds, metrics=PowertoolsMetrics())

    def sweep(event: dict[str, Any], context: Any) -> dict[str, object]:
        remaining = context.get_remaining_time_in_millis() / 1000
        stop_after = time.monotonic() + remaining - SWEEP_RESERVE_SECONDS  # the rest: orphans, the cursor, metrics
        report = lifecycler.sweep(max_repositories=settings.sweep_repositories_per_run, stop_after=stop_after)
        summary = report.to_dict()
        summary["expired"] = len(report.expired)
        logger.info("swept", extra=summary)
        return summary

    return instrumented(sweep)


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
