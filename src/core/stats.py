"""What an operator asks of a cache: what it holds per rule, how it was used over a day and a week, how its upstreams
are. One report, read by `pullthrough stats`, the status page and /metrics, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

from core.ports import MANIFEST, Breakers, Lifecycle, cursor_of
from core.referrers import lists_referrers
from core.rules import Rule, RuleSet
from core.usage import Traffic, UsageKey, UsageTotals, hour_of, most_pulled, traffic

DAY_HOURS = 24
WEEK_HOURS = 7 * 24
MOST_PULLED = 5
PAGE = 100


@dataclass(frozen=True, slots=True)
class Inventory:
    """What one rule's records hold. `bytes_stored` counts a digest once per repository that records it."""

    repositories: int = 0
    tags: int = 0
    manifests: int = 0
    blobs: int = 0
    bytes_stored: int = 0
    last_pull: float | None = None
    images_with_referrers: int = 0  # digests whose referrers (signatures, SBOMs, attestations) are cached


@dataclass(frozen=True, slots=True)
class UpstreamHealth:
    upstream: str
    state: str  # "up", "failing" (failures counted, still asked) or "left alone" (its breaker is open)
    failures: int = 0
    retry_at: float | None = None  # left alone: when one request probes it again
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RuleReport:
    prefix: str
    upstream: str
    inventory: Inventory
    day: Traffic
    week: Traffic
    most_pulled: list[tuple[str, int]]  # (repository as clients name it, pulls in the week)
    health: UpstreamHealth


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: float
    rules: list[RuleReport]
    day: Traffic
    week: Traffic

    def to_dict(self) -> dict[str, object]:
        def with_ratio(window: Traffic) -> dict[str, object]:
            return {**asdict(window), "hit_ratio": window.hit_ratio, "upstream_requests_saved": window.hits}

        return {
            "generated_at": self.generated_at,
            "day": with_ratio(self.day),
            "week": with_ratio(self.week),
            "rules": [
                {"prefix": rule.prefix, "upstream": rule.upstream, "inventory": asdict(rule.inventory),
                 "day": with_ratio(rule.day), "week": with_ratio(rule.week),
                 "most_pulled": [{"repository": name, "pulls": pulls} for name, pulls in rule.most_pulled],
                 "health": asdict(rule.health)}
                for rule in self.rules
            ],
        }  # fmt: skip


def repositories(store: Lifecycle, scope: str) -> Iterator[str]:
    """The repositories one rule holds records of, in order, a page at a time."""
    after = cursor_of(scope, "")  # sorts before the rule's first repository
    while True:
        page = store.repositories(after, PAGE)
        for found_scope, name in page:
            if found_scope != scope:
                return
            yield name
        if len(page) < PAGE:
            return
        after = cursor_of(*page[-1])


def inventory(store: Lifecycle, scope: str) -> Inventory:
    repositories_, tags, manifests, blobs, stored, referred = 0, 0, 0, 0, 0, 0
    pulls: list[float] = []
    for name in repositories(store, scope):
        repository_tags = store.repository_tags(scope, name)
        content = store.repository_content(scope, name)
        repositories_ += 1
        tags += len(repository_tags)
        referred += sum(1 for tag in repository_tags if lists_referrers(tag.tag, tag.digest))
        manifests += sum(1 for entry in content if entry.kind == MANIFEST)
        blobs += sum(1 for entry in content if entry.kind != MANIFEST)
        stored += sum(entry.size for entry in content)
        pulls += [tag.pulled_at for tag in repository_tags]
        pulls += [entry.pulled_at for entry in content if entry.pulled_at is not None]
    return Inventory(repositories_, tags, manifests, blobs, stored, max(pulls, default=None), referred)


def health(breakers: Breakers, upstream: str, now: float) -> UpstreamHealth:
    state = breakers.get_breaker(upstream)
    if state is None:
        return UpstreamHealth(upstream, "up")
    if state.open_until > now or state.trips:
        return UpstreamHealth(upstream, "left alone", state.failures, state.open_until, state.reason)
    if state.failures:
        return UpstreamHealth(upstream, "failing", state.failures, None, state.reason)
    return UpstreamHealth(upstream, "up")


def report(rules: RuleSet, store: Lifecycle, usage: UsageTotals, breakers: Breakers, now: float) -> Report:
    day_from, week_from = hour_of(now) - DAY_HOURS + 1, hour_of(now) - WEEK_HOURS + 1
    totals = usage.usage(week_from)
    rule_reports = [_rule_report(rule, store, totals, breakers, now, day_from, week_from) for rule in rules]
    return Report(now, rule_reports, traffic(totals, day_from), traffic(totals, week_from))


def _rule_report(
    rule: Rule,
    store: Lifecycle,
    totals: list[tuple[UsageKey, float]],
    breakers: Breakers,
    now: float,
    day_from: int,
    week_from: int,
) -> RuleReport:
    pulled = [
        (rule.client_name(name), pulls) for name, pulls in most_pulled(totals, rule.scope, week_from, MOST_PULLED)
    ]
    return RuleReport(
        rule.prefix, rule.upstream, inventory(store, rule.scope), traffic(totals, day_from, rule.scope),
        traffic(totals, week_from, rule.scope), pulled, health(breakers, rule.upstream_base, now),
    )  # fmt: skip
