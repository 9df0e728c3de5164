"""The registry function, behind API Gateway (HTTP API) or an internal load balancer, through Mangum: the same FastAPI
app as the local server."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from mangum import Mangum

from core.budget import MissBudget, MissBudgetPolicy
from core.ports import AllMetrics
from core.usage import UsageMeter
from handlers.composition.aws import LambdaHandler, authenticator, build_cache, table_store
from handlers.composition.powertools import PowertoolsMetrics, instrumented
from handlers.http.registry import create_app
from handlers.settings import AwsSettings
from pullthrough_adapters.aws.filler import FillDispatcher

# Manifests are JSON: send them as text, so API Gateway relays the exact bytes without a base64 round trip.
TEXT_MEDIA_TYPES = ["application/json", "text/", "application/vnd.oci.image.", "application/vnd.docker.distribution."]


def registry_handler(settings: AwsSettings, dispatcher: FillDispatcher | None = None) -> LambdaHandler:
    """Everything is built here, once per container (and captured in the SnapStart snapshot); `dispatcher` starts
    the fill function (default: an asynchronous invocation)."""
    usage = UsageMeter(table_store(settings))
    cache = build_cache(settings, AllMetrics(PowertoolsMetrics(), usage), dispatcher)
    budget = MissBudget(table_store(settings), MissBudgetPolicy(settings.miss_budget))
    app = create_app(cache, authenticator(settings), token_realm=_token_realm(settings), budget=budget)
    asgi = Mangum(app, lifespan="off", text_mime_types=TEXT_MEDIA_TYPES)

    def registry(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = asgi(event, context)
        finally:
            usage.flush_if_due(settings.usage_flush_seconds)
        return response

    return instrumented(registry, http=True)


def _token_realm(settings: AwsSettings) -> Any:
    def realm(request: Request) -> str:
        """The configured public URL, or the domain API Gateway received the request on (which it sets, not the
        client's Host header): where clients get tokens."""
        if settings.public_url:
            return f"{settings.public_url}/token"
        context = request.scope.get("aws.event", {}).get("requestContext", {})
        scheme = "http" if request.headers.get("x-forwarded-proto") == "http" else "https"
        return f"{scheme}://{context.get('domainName', 'localhost')}/token"

    return realm
