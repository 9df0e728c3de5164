"""The registry API on Lambda: the same FastAPI app as the local server, behind API Gateway (HTTP API) and Mangum.

Everything is built at import, once per container (and captured in the SnapStart snapshot).
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from fastapi import Request
from mangum import Mangum

from core.budget import MissBudget, MissBudgetPolicy
from handlers.api import create_app
from handlers.aws import AwsSettings, aws_authenticator, build_aws_cache
from handlers.observability import PowertoolsMetrics, logger, metrics, tracer

# Manifests are JSON: send them as text, so API Gateway relays the exact bytes without a base64 round trip.
TEXT_MEDIA_TYPES = ["application/json", "text/", "application/vnd.oci.image.", "application/vnd.docker.distribution."]

PUBLIC_URL = os.environ.get("PULLTHROUGH_PUBLIC_URL", "").rstrip("/")


def token_realm(request: Request) -> str:
    """The configured public URL, or the domain API Gateway received the request on (which it sets, not the client's
    Host header): where clients get tokens."""
    if PUBLIC_URL:
        return f"{PUBLIC_URL}/token"
    context = request.scope.get("aws.event", {}).get("requestContext", {})
    scheme = "http" if request.headers.get("x-forwarded-proto") == "http" else "https"
    return f"{scheme}://{context.get('domainName', 'localhost')}/token"


settings = AwsSettings.from_environment()
cache = build_aws_cache(settings, PowertoolsMetrics())
budget = MissBudget(cache.metadata, MissBudgetPolicy(settings.miss_budget))
app = create_app(cache, aws_authenticator(settings), token_realm=token_realm, budget=budget)
asgi = Mangum(app, lifespan="off", text_mime_types=TEXT_MEDIA_TYPES)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response: dict[str, Any] = asgi(event, context)  # type: ignore[arg-type]  # two typings of one context
    return response
