"""Composition root of the local mode: files + SQLite under one data directory, real upstreams over HTTP."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from adapters.local.blob_store import FileBlobStore
from adapters.local.events import LogEvents
from adapters.local.filler import TeeFiller
from adapters.local.metadata_store import SqliteMetadataStore
from adapters.local.signing_keys import FileSigningKeys
from adapters.upstream.client import HttpUpstreams
from core.auth import Authenticator, TokenService
from core.budget import MissBudget, MissBudgetPolicy
from core.cache import PullThroughCache
from core.refresh import Refresher
from core.rules import ReloadingRules, RuleSet
from handlers.api import create_app
from handlers.config import BUILTIN_RULES, TOKEN_SERVICE, load_rules, with_stored_rules
from handlers.lanes import UpstreamLanes
from handlers.logs import configure_logging

DATA_DIR_ENV = "PULLTHROUGH_DATA_DIR"
RULES_FILE_ENV = "PULLTHROUGH_RULES_FILE"
RULES_RELOAD_SECONDS = 5.0
AUTH_ENV = "PULLTHROUGH_AUTH"
PUBLIC_URL_ENV = "PULLTHROUGH_PUBLIC_URL"
MISS_BUDGET_ENV = "PULLTHROUGH_MISS_BUDGET"
LOG_LEVEL_ENV = "PULLTHROUGH_LOG_LEVEL"
DEFAULT_MISS_BUDGET = 600  # upstream misses per client per minute


def build_local_cache(data_dir: Path, rules: RuleSet | None) -> PullThroughCache:
    """The cache over one data directory.

    Without a rules file the built-in rules apply, with the rules stored by `pullthrough rules` on top (reloaded
    every few seconds, so a new rule works without a restart).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    blobs = FileBlobStore(data_dir)
    metadata = SqliteMetadataStore(data_dir / "metadata.sqlite3")
    stored = ReloadingRules(lambda: with_stored_rules(BUILTIN_RULES, metadata.list_rules()), RULES_RELOAD_SECONDS)
    return PullThroughCache(
        rules=rules if rules is not None else stored,
        metadata=metadata,
        blobs=blobs,
        upstreams=HttpUpstreams(),
        filler=TeeFiller(blobs, metadata),
    )


def build_local_refresher(data_dir: Path, rules: RuleSet | None) -> Refresher:
    """`pullthrough refresh`: the same cache, its sync events to the log."""
    return Refresher(build_local_cache(data_dir, rules), LogEvents())


def local_authenticator(data_dir: Path) -> Authenticator:
    """Pull keys in the metadata store, token signing keys in a 0600 file beside it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tokens = TokenService(FileSigningKeys(data_dir / "token-signing-keys.json"), service=TOKEN_SERVICE)
    return Authenticator(SqliteMetadataStore(data_dir / "metadata.sqlite3"), tokens)


def app_from_environment() -> FastAPI:
    """The uvicorn factory: each worker process builds its own cache over the shared data directory."""
    configure_logging(os.environ.get(LOG_LEVEL_ENV, "info"))
    rules_file = os.environ.get(RULES_FILE_ENV)
    rules = load_rules(Path(rules_file)) if rules_file else None
    data_dir = Path(os.environ[DATA_DIR_ENV])
    auth = local_authenticator(data_dir) if os.environ.get(AUTH_ENV, "none") == "token" else None
    realm = f"{os.environ.get(PUBLIC_URL_ENV, '').rstrip('/')}/token"
    cache = build_local_cache(data_dir, rules)
    budget = MissBudget(cache.metadata, MissBudgetPolicy(int(os.environ.get(MISS_BUDGET_ENV, DEFAULT_MISS_BUDGET))))
    return create_app(cache, auth, token_realm=lambda request: realm, budget=budget, lanes=UpstreamLanes())
