"""Composition root of the local mode: files + SQLite under one data directory, real upstreams over HTTP. Used by
`pullthrough serve` (in each server worker process) and the other local commands."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from fastapi import FastAPI

from core.auth import Authenticator, TokenService
from core.budget import MissBudget, MissBudgetPolicy
from core.cache import PullThroughCache
from core.lifecycle import Lifecycler
from core.ports import AllMetrics, Metrics, NoMetrics
from core.recent_manifests import RecentManifests
from core.refresh import Refresher
from core.rules import ReloadingRules, RuleSource
from core.stats import Report, inventory, report
from core.usage import UsageMeter
from handlers.composition.janitor import Janitor
from handlers.http.lanes import UpstreamLanes
from handlers.http.observed import ObservedRequests
from handlers.http.registry import create_app
from handlers.http.status import StatusSources, status_error, status_router
from handlers.logs import configure_logging
from handlers.malloc import limit_arenas
from handlers.presets import BUILTIN_RULES, with_stored_rules
from handlers.rules_file import load_rules
from handlers.settings import TOKEN_SERVICE, DataDir, LocalSettings
from pullthrough_adapters.local.blob_store import FileBlobStore
from pullthrough_adapters.local.events import LogEvents
from pullthrough_adapters.local.filler import ABANDONED_AFTER_SECONDS, TeeFiller, remove_abandoned
from pullthrough_adapters.local.metadata_store import SqliteMetadataStore
from pullthrough_adapters.local.prometheus import MULTIPROCESS_DIRECTORY, PrometheusMetrics, StateCollector
from pullthrough_adapters.local.signing_keys import FileSigningKeys
from pullthrough_adapters.upstream.addresses import AddressPolicy
from pullthrough_adapters.upstream.client import HttpUpstreams, ResponseHook

log = logging.getLogger(__name__)

RULES_RELOAD_SECONDS = 5.0
USAGE_FLUSH_SECONDS = 5.0  # how often a server process writes its usage totals (what `stats` and `/` read)
STORED_BYTES_MAX_AGE_SECONDS = 30.0  # the stored bytes are a walk of the blob directory
FILLS_DRAIN_SECONDS = 10.0  # a stopping server lets its downloads finish this long (inside Kubernetes' 30 s grace)


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


def build_cache(
    settings: LocalSettings,
    metadata: SqliteMetadataStore,
    metrics: Metrics | None = None,
    on_upstream_response: ResponseHook | None = None,
    filler: TeeFiller | None = None,
) -> PullThroughCache:
    blobs = blob_store(settings.data_dir)
    filler = filler or TeeFiller(blobs, metadata)
    upstreams = HttpUpstreams(AddressPolicy(settings.upstream.allow_private), settings.upstream.timeout_seconds,
                              on_response=on_upstream_response)  # fmt: skip
    return PullThroughCache(rule_source(settings, metadata), metadata, blobs, upstreams, filler,
                            metrics=metrics, recent=RecentManifests())  # fmt: skip


def authenticator(data_dir: DataDir, metadata: SqliteMetadataStore) -> Authenticator:
    """Pull keys in the metadata store, token signing keys in a 0600 file beside it."""
    tokens = TokenService(FileSigningKeys(data_dir.create().signing_keys), service=TOKEN_SERVICE)
    return Authenticator(metadata, tokens)


def build_app(settings: LocalSettings, prometheus: PrometheusMetrics, usage: UsageMeter) -> FastAPI:
    """The registry, its status pages and /metrics, every count going to Prometheus and the usage totals."""
    metadata = metadata_store(settings.data_dir)
    auth = authenticator(settings.data_dir, metadata) if settings.auth == "token" else None
    realm = f"{settings.public_url}/token"
    budget = MissBudget(metadata, MissBudgetPolicy(settings.miss_budget))
    blobs = blob_store(settings.data_dir)
    filler = TeeFiller(blobs, metadata)
    cache = build_cache(settings, metadata, AllMetrics(prometheus, usage), prometheus.observe_upstream, filler)
    stored_bytes = _remembered(blobs.usage, STORED_BYTES_MAX_AGE_SECONDS)
    sources = StatusSources(cache.rule_source, metadata, metadata, metadata, blobs, stored_bytes)
    state = StateCollector(lambda: _content_by_rule(cache.rule_source, metadata), stored_bytes,
                           lambda: metadata.live_leases("fill/"),
                           lambda: {rule.upstream_base: metadata.get_breaker(rule.upstream_base)
                                    for rule in cache.rule_source.current()})  # fmt: skip
    pages = status_router(sources, auth, lambda: prometheus.exposition(state), settings.metrics_access)
    app = create_app(cache, auth, token_realm=lambda request: realm, budget=budget, lanes=UpstreamLanes(),
                     pages=pages, page_error=status_error)  # fmt: skip
    app.add_middleware(ObservedRequests, observe=prometheus.observe_request)
    app.router.on_shutdown.append(lambda: _drain(filler))
    app.router.on_shutdown.append(usage.flush)
    return app


def app_for_worker() -> FastAPI:
    """The uvicorn factory: each server worker process builds its own app over the shared data directory, from the
    settings `serve` handed down (and the Prometheus files' directory, which `serve` set before this was imported)."""
    limit_arenas()  # before this worker starts its threads
    settings = LocalSettings.from_workers_environment()
    configure_logging(settings.log_level)
    prometheus = PrometheusMetrics()
    usage = UsageMeter(metadata_store(settings.data_dir))
    _every(USAGE_FLUSH_SECONDS, usage.flush, "usage")
    build_janitor(settings, prometheus).start()
    return build_app(settings, prometheus, usage)


def build_refresher(settings: LocalSettings) -> Refresher:
    """`pullthrough refresh`: the same cache, its sync events to the log; beside a running `serve`, its outcomes
    counted on the server's /metrics too."""
    metadata = metadata_store(settings.data_dir)
    metrics: Metrics = NoMetrics()
    if settings.data_dir.metrics.is_dir():
        os.environ.setdefault(MULTIPROCESS_DIRECTORY, str(settings.data_dir.metrics))
        metrics = PrometheusMetrics()
    return Refresher(build_cache(settings, metadata, metrics), metadata, LogEvents(), metrics)


def build_lifecycler(
    settings: LocalSettings, *, grace_seconds: float, dry_run: bool = False, metrics: Metrics | None = None
) -> Lifecycler:
    """`pullthrough gc` and the size cap: the sweep over the data directory, its expirations to the log."""
    metadata = metadata_store(settings.data_dir)
    return Lifecycler(rule_source(settings, metadata), metadata, blob_store(settings.data_dir),
                      grace_seconds=grace_seconds, events=LogEvents(), metrics=metrics, dry_run=dry_run)  # fmt: skip


def build_janitor(settings: LocalSettings, metrics: Metrics | None = None) -> Janitor:
    """The lifecycle in the background of `serve`: sweeps, the size cap and the deletion of orphaned bytes."""
    lifecycler = build_lifecycler(settings, grace_seconds=settings.gc_grace_seconds, metrics=metrics)
    blobs = blob_store(settings.data_dir)
    return Janitor(lifecycler, metadata_store(settings.data_dir), sweep_every=settings.gc_interval_seconds,
                   usage=blobs.usage, cap=settings.max_cache_size,
                   remove_abandoned=lambda: remove_abandoned(blobs))  # fmt: skip


def build_report(settings: LocalSettings) -> Report:
    """`pullthrough stats`: the same report the status page shows."""
    metadata = metadata_store(settings.data_dir)
    return report(rule_source(settings, metadata).current(), metadata, metadata, metadata, time.time())


def _drain(filler: TeeFiller) -> None:
    if not filler.drain(FILLS_DRAIN_SECONDS):
        log.warning("stopping with downloads unfinished; their partial files are removed after %d s",
                    ABANDONED_AFTER_SECONDS)  # fmt: skip


def _content_by_rule(rules: RuleSource, records: SqliteMetadataStore) -> dict[str, tuple[int, int, int]]:
    found = {}
    for rule in rules.current():
        held = inventory(records, rule.scope)
        found[rule.prefix or "(root)"] = (held.repositories, held.tags, held.bytes_stored)
    return found


def _remembered(read: Callable[[], int], max_age: float) -> Callable[[], int]:
    """`read`, asked again only once its answer is `max_age` seconds old."""
    last: list[tuple[float, int]] = []

    def remembered() -> int:
        if not last or time.monotonic() - last[0][0] > max_age:
            last[:] = [(time.monotonic(), read())]
        return last[0][1]

    return remembered


def _every(seconds: float, task: Callable[[], None], name: str) -> None:
    def run() -> None:
        while True:
            time.sleep(seconds)
            task()

    threading.Thread(target=run, name=name, daemon=True).start()
