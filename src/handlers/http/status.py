"""The status pages of `pullthrough serve` (server-rendered HTML, no JavaScript) and its /metrics.

`/`: the overview (traffic, savings, upstream health, content); `/repositories`: what is cached, by rule;
`/repositories/<name>`: a repository's tags; `/images/<name>/<digest>`: one image. Read-only. In token mode every page
asks for a pull key (HTTP Basic: its name and secret) and shows only what that key may pull.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from core.auth import Authenticator, PullKey
from core.digest import Digest
from core.errors import NameUnknown, RegistryError, Unauthorized
from core.images import describe
from core.ports import BlobStore, Breakers, Lifecycle
from core.referrers import artifact_types, referrers_tag
from core.rules import Rule, RuleSource
from core.stats import Report, RuleReport, report
from core.usage import Traffic, UsageTotals
from handlers.settings import MetricsAccess

REPORT_MAX_AGE_SECONDS = 10.0  # the report walks every record: pages within this share one
LOGIN_MAX_AGE_SECONDS = 60.0  # a key's secret is checked with bcrypt: once a minute per browser, not per page
PAGE = 100

_templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
_templates.env.filters["bytes"] = lambda value: _human_bytes(value)
_templates.env.filters["ratio"] = lambda value: "—" if value is None else f"{value:.1%}"
_templates.env.filters["when"] = lambda value: _when(value)
_templates.env.filters["short"] = lambda digest: str(digest).split(":")[-1][:12]


@dataclass(frozen=True)
class StatusSources:
    """What the pages read: the records, the usage totals, the upstreams' state, the stored bytes."""

    rules: RuleSource
    records: Lifecycle
    usage: UsageTotals
    breakers: Breakers
    blobs: BlobStore
    stored_bytes: Callable[[], int]


def status_router(
    sources: StatusSources,
    auth: Authenticator | None,
    metrics_exposition: Callable[[], bytes],
    metrics_access: MetricsAccess,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    router = APIRouter()
    reports: dict[str, tuple[float, Report]] = {}
    logins: dict[str, tuple[float, PullKey]] = {}

    def visitor(request: Request) -> PullKey | None:
        """None: every repository is visible (anonymous mode)."""
        if auth is None:
            return None
        header = request.headers.get("authorization")
        remembered = logins.get(_fingerprint(header))
        if remembered is not None and clock() - remembered[0] < LOGIN_MAX_AGE_SECONDS:
            return remembered[1]
        key = auth.login(header)  # Unauthorized: answered with a Basic challenge below
        now = clock()
        for stale in [seen for seen, (at, _) in logins.items() if now - at >= LOGIN_MAX_AGE_SECONDS]:
            del logins[stale]  # a key revoked or rotated is forgotten within the minute
        logins[_fingerprint(header)] = (now, key)
        return key

    def visible(key: PullKey | None, client_name: str) -> bool:
        return key is None or key.may_pull(client_name)

    def current_report() -> Report:
        cached = reports.get("report")
        if cached is None or clock() - cached[0] > REPORT_MAX_AGE_SECONDS:
            made = report(sources.rules.current(), sources.records, sources.usage, sources.breakers, clock())
            reports["report"] = cached = (clock(), made)
        return cached[1]

    def visible_rules(key: PullKey | None) -> list[RuleReport]:
        rules = {rule.prefix: rule for rule in sources.rules.current()}
        return [entry for entry in current_report().rules if _key_reaches(key, rules[entry.prefix])]

    def page(request: Request, template: str, **context: Any) -> HTMLResponse:
        return _templates.TemplateResponse(request, template, {"anonymous": auth is None, **context})

    @router.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> Response:
        key = visitor(request)
        rules = visible_rules(key)
        day, week = sum((rule.day for rule in rules), Traffic()), sum((rule.week for rule in rules), Traffic())
        return page(request, "overview.html", rules=rules, day=day, week=week,
                    stored_bytes=sources.stored_bytes() if key is None else None,
                    generated_at=current_report().generated_at)  # fmt: skip

    @router.get("/repositories", response_class=HTMLResponse)
    def repositories(request: Request, rule: str | None = None, after: str | None = None) -> Response:
        key = visitor(request)
        sections = []
        for found in sources.rules.current():
            if (rule is not None and found.prefix != rule) or not _key_reaches(key, found):
                continue
            listed, more = _repository_page(sources.records, found, after if rule is not None else None)
            rows = [(found.client_name(name), name, tags, last) for name, tags, last in listed]
            sections.append((found, [row for row in rows if visible(key, row[0])], more))
        return page(request, "repositories.html", sections=sections)

    @router.get("/repositories/{name:path}", response_class=HTMLResponse)
    def repository(request: Request, name: str) -> Response:
        key = visitor(request)
        if not visible(key, name):
            raise NameUnknown(f"{name!r} is not cached, or this key may not pull it")
        route = sources.rules.current().route(name)
        tags = sorted(sources.records.repository_tags(route.scope, route.repository), key=lambda tag: tag.tag)
        rows = [(tag, describe(sources.blobs, tag.digest)) for tag in tags]
        by_digest = [entry for entry in sources.records.repository_content(route.scope, route.repository)
                     if entry.kind == "manifest" and entry.pulled_at is not None]  # fmt: skip
        if not tags and not by_digest:
            raise NameUnknown(f"{name!r} is not cached")
        return page(request, "repository.html", name=name, rows=rows, by_digest=by_digest)

    @router.get("/images/{name:path}/{digest}", response_class=HTMLResponse)
    def image(request: Request, name: str, digest: str) -> Response:
        key = visitor(request)
        if not visible(key, name):
            raise NameUnknown(f"{name!r} is not cached, or this key may not pull it")
        route = sources.rules.current().route(name)
        parsed = Digest.parse(digest)
        if not _recorded(sources.records, route.scope, route.repository, parsed):
            raise NameUnknown(f"{name}@{digest} is not cached")
        view = describe(sources.blobs, parsed)
        if view is None:
            raise NameUnknown(f"{name}@{digest} is not cached")
        repository_tags = sources.records.repository_tags(route.scope, route.repository)
        tags = [tag.tag for tag in repository_tags if str(tag.digest) == digest]
        listing_tag = referrers_tag(parsed)
        listing = next((tag for tag in repository_tags if tag.tag == listing_tag), None)
        stored_listing = sources.blobs.read(listing.digest) if listing is not None else None
        referrers = artifact_types(stored_listing) if stored_listing is not None else None
        return page(request, "image.html", name=name, image=view, tags=tags, referrers=referrers,
                    referrers_index=listing.digest if listing is not None else None)  # fmt: skip

    @router.get("/metrics")
    def metrics(request: Request) -> Response:
        if metrics_access == "off" or (metrics_access == "loopback" and not _loopback(request)):
            return Response("metrics are not served to this address\n", status_code=403, media_type="text/plain")
        return Response(metrics_exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router


def status_error(request: Request, error: RegistryError) -> Response | None:
    """Errors on the pages are pages: a Basic challenge for a key, a 404 for what is not there."""
    if request.url.path.startswith("/v2") or request.url.path == "/token":
        return None
    if isinstance(error, Unauthorized):
        body = _templates.get_template("login.html").render(message=error.message)
        challenge = 'Basic realm="pullthrough status", charset="UTF-8"'
        return HTMLResponse(body, status_code=401, headers={"WWW-Authenticate": challenge})
    status = error.http_status
    body = _templates.get_template("error.html").render(message=error.message, status=status)
    return HTMLResponse(body, status_code=status)


def _repository_page(records: Lifecycle, rule: Rule, after: str | None) -> tuple[list[tuple[str, int, float]], bool]:
    """Up to PAGE repositories of the rule after `after` (a repository name), with tag counts and last pulls."""
    cursor = f"{rule.scope}#{after or ''}"
    found = []
    for scope, name in records.repositories(cursor, PAGE + 1):
        if scope != rule.scope:
            break
        found.append(name)
    rows = []
    for name in found[:PAGE]:
        tags = records.repository_tags(rule.scope, name)
        rows.append((name, len(tags), max((tag.pulled_at for tag in tags), default=0.0)))
    return rows, len(found) > PAGE


def _recorded(records: Lifecycle, scope: str, repository: str, digest: Digest) -> bool:
    return any(entry.digest == digest for entry in records.repository_content(scope, repository))


def _key_reaches(key: PullKey | None, rule: Rule) -> bool:
    """Whether the key may pull anything under the rule's prefix."""
    if key is None:
        return True
    prefix = rule.prefix
    return any(own == "" or prefix == "" or own == prefix or own.startswith(prefix + "/") or
               prefix.startswith(own + "/") for own in key.prefixes)  # fmt: skip


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fingerprint(header: str | None) -> str:
    return hashlib.sha256((header or "").encode()).hexdigest()


def _human_bytes(value: float | None) -> str:
    if value is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))
