"""The scheduled refresh function. For now it reports that scheduled refresh is not implemented: tags are
revalidated on pull, when their TTL has passed. Scheduled revalidation of recently pulled tags comes next."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.observability import logger, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.info("scheduled refresh is not implemented yet; stale tags are revalidated when pulled")
    return {"refreshed": 0, "implemented": False}
