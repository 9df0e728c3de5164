"""Composition root of the scheduled functions (refresh, sweep) and of the CLI's views of a deployment (`gc --table`,
`stats --table`): kept apart from aws, so that the functions serving requests never import the lifecycle, the
refresh or the report at a cold start."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from core.lifecycle import Lifecycler
from core.ports import Metrics
from core.refresh import Refresher
from core.stats import Report, report
from handlers.composition.aws import LambdaHandler, blob_store, build_cache, clients_for, rule_source, table_store
from handlers.composition.powertools import PowertoolsMetrics, instrumented, logger
from handlers.rules_file import load_rules
from handlers.settings import AwsSettings
from pullthrough_adapters.aws.events import EventBridgeEvents

# A sweep starts no repository with less than this left of the function's time: deleting the orphans of a full
# page and saving the cursor take well under it.
SWEEP_RESERVE_SECONDS = 120.0


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
