"""Composition root of the local mode: files + SQLite under one data directory, real upstreams over HTTP. Used by
`pullthrough serve` (in each server worker process) and the other local commands."""

from __future__ import annotations

from fastapi import FastAPI

from core.auth import Authenticator, TokenService
from core.budget import MissBudget, MissBudgetPolicy
from core.cache import PullThroughCache
from core.lifecycle import Lifecycler
from core.refresh import Refresher
from core.rules import ReloadingRules, RuleSource
from handlers.composition.janitor import Janitor
from handlers.http.lanes import UpstreamLanes
from handlers.http.registry import create_app
from handlers.logs import configure_logging
from handlers.presets import BUILTIN_RULES, with_stored_rules
from handlers.rules_file import load_rules
from handlers.settings import TOKEN_SERVICE, DataDir, LocalSettings
from pullthrough_adapters.local.blob_store import FileBlobStore
from pullthrough_adapters.local.events import LogEvents
from pullthrough_adapters.local.filler import TeeFiller
from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
from pullthrough_adapters.local.signing_keys import FileSigningKeys
from pullthrough_adapters.upstream.addresses import AddressPolicy
from pullthrough_adapters.upstream.client import HttpUpstreams

RULES_RELOAD_SECONDS = 5.0


def metadata_store(data_dir: DataDir) -> SqliteMetadataStore:
    return SqliteMetadataStore(data_dir.create().metadata_db)


def rule_source(settings: LocalSettings, metadata: SqliteMetadataStore) -> RuleSource:
    """The rules file's rules; without one, the built-in rules with those stored by `pullthrough rules` on top
    (reloaded every few seconds, so a new rule works without a restart)."""
    if settings.rules_file is not None:
        return load_rules(settings.rules_file)
    return ReloadingRules(lambda: with_stored_rules(BUILTIN_RULES, metadata.list_rules()), RULES_RELOAD_SECONDS)


def blob_store(data_dir: DataDir) -> FileBlobStore:
    return FileBlobStore(data_dir.create().root)


def build_cache(settings: LocalSettings, metadata: SqliteMetadataStore) -> PullThroughCache:
    blobs = blob_store(settings.data_dir)
    upstreams = HttpUpstreams(AddressPolicy(settings.upstream.allow_private), settings.upstream.timeout_seconds)
    return PullThroughCache(rule_source(settings, metadata), metadata, blobs, upstreams, TeeFiller(blobs, metadata))


def authenticator(data_dir: DataDir, metadata: SqliteMetadataStore) -> Authenticator:
    """Pull keys in the metadata store, token signing keys in a 0600 file beside it."""
    tokens = TokenService(FileSigningKeys(data_dir.create().signing_keys), service=TOKEN_SERVICE)
    return Authenticator(metadata, tokens)


def build_app(settings: LocalSettings) -> FastAPI:
    metadata = metadata_store(settings.data_dir)
    auth = authenticator(settings.data_dir, metadata) if settings.auth == "token" else None
    realm = f"{settings.public_url}/token"
    budget = MissBudget(metadata, MissBudgetPolicy(settings.miss_budget))
    cache = build_cache(settings, metadata)
    return create_app(cache, auth, token_realm=lambda request: realm, budget=budget, lanes=UpstreamLanes())


def app_for_worker() -> FastAPI:
    """The uvicorn factory: each server worker process builds its own app over the shared data directory, from the
    settings `serve` handed down."""
    settings = LocalSettings.from_workers_environment()
    configure_logging(settings.log_level)
    build_janitor(settings).start()
    return build_app(settings)


def build_refresher(settings: LocalSettings) -> Refresher:
    """`pullthrough refresh`: the same cache, its sync events to the log."""
    metadata = metadata_store(settings.data_dir)
    return Refresher(build_cache(settings, metadata), metadata, LogEvents())


def build_lifecycler(settings: LocalSettings, *, grace_seconds: float, dry_run: bool = False) -> Lifecycler:
    """`pullthrough gc` and the size cap: the sweep over the data directory, its expirations to the log."""
    metadata = metadata_store(settings.data_dir)
    return Lifecycler(rule_source(settings, metadata), metadata, blob_store(settings.data_dir),
                      grace_seconds=grace_seconds, events=LogEvents(), dry_run=dry_run)  # fmt: skip


def build_janitor(settings: LocalSettings) -> Janitor:
    """The lifecycle in the background of `serve`: sweeps, the size cap and the deletion of orphaned bytes."""
    lifecycler = build_lifecycler(settings, grace_seconds=settings.gc_grace_seconds)
    return Janitor(lifecycler, metadata_store(settings.data_dir), sweep_every=settings.gc_interval_seconds,
                   usage=blob_store(settings.data_dir).usage, cap=settings.max_cache_size)  # fmt: skip
