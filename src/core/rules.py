"""Cache rules: which path prefix maps to which upstream registry, and how."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from core.errors import NameUnknown
from core.reference import validate_name

DEFAULT_TAG_TTL_SECONDS = 24 * 60 * 60  # ECR's fixed window; here it is only the default


class RuleInvalid(ValueError):
    """A rule that cannot be used; raised while loading configuration, never while serving."""


ROOT_PREFIX = ""  # a rule for names no prefix matches: what Docker's registry-mirrors needs (it cannot add a path)


@dataclass(frozen=True, slots=True)
class Rule:
    prefix: str
    upstream: str
    tag_ttl_seconds: int = DEFAULT_TAG_TTL_SECONDS
    # Docker Hub keeps official images under library/: `alpine` means `library/alpine` there.
    library_namespace: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # Past this age a tag is not served when the upstream fails: the error is. None: always serve the stale copy.
    max_stale_seconds: int | None = None
    # Platforms ("linux/amd64") whose blobs a refresh fetches when a tag moves, so even a first pull is a hit.
    prefetch_platforms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            if self.prefix != ROOT_PREFIX:
                validate_name(self.prefix)
        except Exception as exc:
            raise RuleInvalid(f"rule prefix {self.prefix!r} is not one or more repository path segments") from exc
        parts = urlsplit(self.upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RuleInvalid(f"rule {self.prefix!r}: upstream {self.upstream!r} is not an http(s) registry URL")
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise RuleInvalid(f"rule {self.prefix!r}: upstream {self.upstream!r} must be a bare registry URL")
        if self.tag_ttl_seconds < 0:
            raise RuleInvalid(f"rule {self.prefix!r}: tag_ttl_seconds must be >= 0")
        if self.max_stale_seconds is not None and self.max_stale_seconds < 0:
            raise RuleInvalid(f"rule {self.prefix!r}: max_stale_seconds must be >= 0")
        for platform in self.prefetch_platforms:
            if not 2 <= len(platform.split("/")) <= 3:
                raise RuleInvalid(f"rule {self.prefix!r}: platform {platform!r} is not os/arch[/variant]")

    @property
    def scope(self) -> str:
        """Cached content is partitioned by rule, so one rule's credentials never serve another's clients."""
        return self.prefix or "(root)"

    @property
    def upstream_base(self) -> str:
        return self.upstream.rstrip("/")

    def upstream_repository(self, repository: str) -> str:
        if self.library_namespace and "/" not in repository:
            return f"library/{repository}"
        return repository


@dataclass(frozen=True, slots=True)
class Route:
    """Where a client's repository name leads: the rule, and the repository name on the upstream."""

    rule: Rule
    repository: str

    @property
    def scope(self) -> str:
        return self.rule.scope


class RuleSet:
    def __init__(self, rules: Iterable[Rule]) -> None:
        all_rules = list(rules)
        self._root = next((rule for rule in all_rules if rule.prefix == ROOT_PREFIX), None)
        prefixed = (rule for rule in all_rules if rule.prefix != ROOT_PREFIX)
        self._rules = sorted(prefixed, key=lambda rule: rule.prefix.count("/"), reverse=True)
        prefixes = [rule.prefix for rule in all_rules]
        duplicates = {prefix for prefix in prefixes if prefixes.count(prefix) > 1}
        if duplicates:
            raise RuleInvalid(f"duplicate rule prefixes: {sorted(duplicates)}")

    def __iter__(self) -> Iterator[Rule]:
        yield from self._rules
        if self._root is not None:
            yield self._root

    def route(self, name: str) -> Route:
        """The longest matching prefix wins, the root rule takes the rest; what follows the prefix is the upstream
        repository."""
        validate_name(name)
        for rule in self._rules:
            if name.startswith(rule.prefix + "/"):
                return Route(rule, rule.upstream_repository(name[len(rule.prefix) + 1 :]))
        if self._root is not None:
            return Route(self._root, self._root.upstream_repository(name))
        raise NameUnknown(f"no cache rule matches repository {name!r}", detail={"name": name})

    def by_prefix(self, prefix: str) -> Rule | None:
        return next((rule for rule in self if rule.prefix == prefix), None)

    def current(self) -> RuleSet:
        return self


class RuleSource(Protocol):
    def current(self) -> RuleSet: ...


class ReloadingRules:
    """Rules loaded by `load` and reloaded at most every `interval` seconds: a Lambda container lives for hours,
    and rule changes made meanwhile should reach it without a redeploy."""

    def __init__(self, load: Callable[[], RuleSet], interval: float, clock: Callable[[], float] = time.monotonic):
        self._load = load
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._rules = RuleSet([])
        self._loaded_at = -math.inf  # first use loads: nothing is read at import (or into a SnapStart snapshot)

    def current(self) -> RuleSet:
        if self._clock() - self._loaded_at >= self._interval:
            with self._lock:
                if self._clock() - self._loaded_at >= self._interval:
                    self._rules = self._load()
                    self._loaded_at = self._clock()
        return self._rules
