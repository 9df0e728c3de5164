"""The rules admin API on Lambda, behind the IAM-authorized /admin/ routes of the HTTP API."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from handlers.admin import build_admin_app_from_environment
from handlers.observability import logger, metrics, tracer

asgi = Mangum(build_admin_app_from_environment(), lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.info("admin request", extra={"caller": event.get("requestContext", {}).get("authorizer", {}).get("iam")})
    response: dict[str, Any] = asgi(event, context)  # type: ignore[arg-type]  # two typings of one context
    return response
