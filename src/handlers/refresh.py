"""The scheduled refresh function: revalidates stale tags that clients pulled recently, so their next pull is a hit.

Bounded work per run (PULLTHROUGH_REFRESH_LIMIT tags, least recently confirmed first); a tag it revalidated counts
as confirmed, so the next run carries on with the rest. Two runs at once share the per-tag leases: one HEAD a tag.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from adapters.aws.events import EventBridgeEvents
from core.refresh import Refresher
from handlers.aws import AwsSettings, build_aws_cache, clients_for
from handlers.observability import PowertoolsMetrics, logger, metrics, tracer

WINDOW_SECONDS = float(os.environ.get("PULLTHROUGH_REFRESH_WINDOW_DAYS", "30")) * 86400
LIMIT = int(os.environ.get("PULLTHROUGH_REFRESH_LIMIT", "500"))

settings = AwsSettings.from_environment()
_metrics = PowertoolsMetrics()
refresher = Refresher(
    build_aws_cache(settings, _metrics), EventBridgeEvents(clients_for(settings).events_client()), _metrics
)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    outcomes = refresher.refresh_stale(pulled_within_seconds=WINDOW_SECONDS, limit=LIMIT)
    summary = Counter(outcome.status for outcome in outcomes)
    for outcome in outcomes:
        if outcome.status != "unchanged":
            logger.info("refreshed", extra={"tag": f"{outcome.name}:{outcome.tag}", "status": outcome.status,
                                            "digest": outcome.digest, "reason": outcome.reason})  # fmt: skip
    statuses = ("unchanged", "updated", "deferred", "failed")
    return {"revalidated": len(outcomes), **{status: summary[status] for status in statuses}}
