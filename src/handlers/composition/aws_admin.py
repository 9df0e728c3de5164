"""The rules admin function, behind the IAM-authorized /admin/ routes of the HTTP API: kept apart from the registry,
so that its cold start neither imports nor builds the registry app."""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from core.rules import Rule
from handlers.composition.aws import LambdaHandler, table_store
from handlers.composition.powertools import instrumented, logger
from handlers.http.admin import create_admin_app
from handlers.settings import AwsSettings
from pullthrough_adapters.upstream.addresses import AddressPolicy


def admin_handler(settings: AwsSettings) -> LambdaHandler:
    """The rules admin API, behind the IAM-authorized /admin/ routes of the HTTP API."""
    addresses = AddressPolicy(settings.upstream.allow_private)

    def validate(rule: Rule, image: str | None) -> dict[str, object]:
        from pullthrough_adapters.upstream.validation import validate_rule_now  # httpx: when a rule is validated

        return validate_rule_now(rule, addresses, image).to_dict()

    asgi = Mangum(create_admin_app(table_store(settings), validate), lifespan="off")

    def admin(event: dict[str, Any], context: Any) -> dict[str, Any]:
        caller = event.get("requestContext", {}).get("authorizer", {}).get("iam")
        logger.info("admin request", extra={"caller": caller})
        response: dict[str, Any] = asgi(event, context)
        return response

    return instrumented(admin, http=True)
