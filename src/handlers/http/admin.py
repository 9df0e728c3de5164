"""The rules admin API: the `pullthrough rules` words over HTTP, for CI and infrastructure code.

On AWS it runs as its own function behind the `/admin/` routes, which API Gateway guards with IAM (SigV4-signed
requests only); it never serves registry traffic, and the registry function cannot change rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Body, FastAPI, Response
from fastapi.responses import JSONResponse

from core.rules import Rule, RuleInvalid, RuleStore
from handlers.rules_file import parse_rule

ROOT = "_root"  # the root rule's prefix is empty; in a path it is spelled _root (no prefix can start with _)


RuleValidator = Callable[[Rule, str | None], dict[str, object]]


def create_admin_app(store: RuleStore, validate_rule: RuleValidator) -> FastAPI:
    """`validate_rule(rule, image)` contacts the rule's upstream and says what it found (`pullthrough rules validate`
    over HTTP); the composition root gives it an upstream client."""
    app = FastAPI(title="pullthrough admin", docs_url=None, redoc_url=None, openapi_url=None)

    def find(prefix: str) -> Rule | None:
        return next((rule for rule in store.list_rules() if rule.prefix == prefix), None)

    @app.get("/admin/rules")
    def list_rules() -> list[dict[str, Any]]:
        return [rule.to_dict() for rule in store.list_rules()]

    @app.get("/admin/rules/{prefix:path}")
    def describe(prefix: str) -> Response:
        rule = find(_prefix(prefix))
        return JSONResponse(rule.to_dict()) if rule else _error(404, "NAME_UNKNOWN", f"no rule for {prefix!r}")

    @app.put("/admin/rules/{prefix:path}")
    def put(prefix: str, settings: dict[str, Any] = Body(...)) -> Response:  # noqa: B008 - FastAPI's idiom
        try:
            rule = parse_rule({**settings, "prefix": _prefix(prefix)})
        except RuleInvalid as exc:
            return _error(400, "RULE_INVALID", str(exc))
        created = find(rule.prefix) is None
        store.put_rule(rule)
        return JSONResponse(rule.to_dict(), status_code=201 if created else 200)

    @app.delete("/admin/rules/{prefix:path}")
    def delete(prefix: str) -> Response:
        if find(_prefix(prefix)) is None:
            return _error(404, "NAME_UNKNOWN", f"no rule for {prefix!r}")
        store.delete_rule(_prefix(prefix))
        return Response(status_code=204)

    @app.post("/admin/validate/{prefix:path}")
    def validate(prefix: str, image: str | None = None) -> Response:
        rule = find(_prefix(prefix))
        if rule is None:
            return _error(404, "NAME_UNKNOWN", f"no rule for {prefix!r}")
        return JSONResponse(validate_rule(rule, image))

    return app


def _prefix(path_prefix: str) -> str:
    return "" if path_prefix == ROOT else path_prefix


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"errors": [{"code": code, "message": message}]}, status_code=status)
