"""The blob fill function: copies one blob into S3 for up to 15 minutes, for a request that could not wait."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.aws import FILL_LEASE_SECONDS, AwsSettings, build_aws_cache
from handlers.observability import PowertoolsMetrics, logger, metrics, tracer

cache = build_aws_cache(AwsSettings.from_environment(), PowertoolsMetrics())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, str], context: LambdaContext | None) -> dict[str, Any]:
    size = cache.fill_blob(
        event["name"], event["digest"], lease_owner=event["lease_owner"], lease_seconds=FILL_LEASE_SECONDS
    )
    if size is None:
        logger.info("another filler holds the lease", extra={"digest": event["digest"]})
    else:
        metrics.add_metric(name="BlobFilledBytes", unit="Bytes", value=size)
    return {"name": event["name"], "digest": event["digest"], "size": size}
