"""Cache rules: which path prefix maps to which upstream registry, and how."""

from __future__ import annotations

import fnmatch
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Protocol
from urllib.parse import urlsplit

from core.durations import format_duration, parse_duration
from core.errors import Denied, NameUnknown
from core.reference import validate_name

DEFAULT_TAG_TTL_SECONDS = 24 * 60 * 60  # ECR's fixed window; here it is only the default
DEFAULT_MAX_BLOB_BYTES = 52_000 * 1024 * 1024  # ECR's layer size limit: no real image needs more
PULL_RECORD_SECONDS = 60.0
# What clients call Docker Hub (`ns=docker.io`) and where its registry API lives.
DOCKER_HUB_ALIASES = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}


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
    # Where the upstream credentials are (env:NAME, file:PATH, a Secrets Manager ARN): a reference, never a secret.
    credentials: str | None = None
    # Past this age a tag is not served when the upstream fails: the error is. None: always serve the stale copy.
    max_stale_seconds: int | None = None
    # Platforms ("linux/amd64") whose blobs a refresh fetches when a tag moves, so even a first pull is a hit.
    prefetch_platforms: tuple[str, ...] = ()
    # `<prefix>/x` is `<upstream_repository_prefix>/x` upstream, like ECR's upstreamRepositoryPrefix.
    upstream_repository_prefix: str | None = None
    # Globs on the upstream repository name: with `allow`, only matching names; `deny` always wins.
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    allowed_tags: str | None = None  # a regular expression tags must match in full
    # No upstream blob larger than this is fetched: a hostile or broken upstream cannot fill the disk.
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
    # An image nobody pulled for this long is forgotten by the lifecycle sweep; None keeps everything forever.
    expire_unpulled: int | None = None
    # Pinned: "repository:tag" globs (or "re:" and a regular expression) that never expire.
    keep: tuple[str, ...] = ()

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
        if self.max_blob_bytes < 1:
            raise RuleInvalid(f"rule {self.prefix!r}: max_blob_bytes must be >= 1")
        if self.expire_unpulled is not None and self.expire_unpulled < 1:
            raise RuleInvalid(f"rule {self.prefix!r}: expire_unpulled must be at least a second")
        for pattern in self.keep:
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise RuleInvalid(f"rule {self.prefix!r}: keep {pattern!r} is not a regular expression") from exc
        if self.max_stale_seconds is not None and self.max_stale_seconds < 0:
            raise RuleInvalid(f"rule {self.prefix!r}: max_stale_seconds must be >= 0")
        for platform in self.prefetch_platforms:
            if not 2 <= len(platform.split("/")) <= 3:
                raise RuleInvalid(f"rule {self.prefix!r}: platform {platform!r} is not os/arch[/variant]")
        if self.upstream_repository_prefix is not None:
            if self.prefix == ROOT_PREFIX:
                raise RuleInvalid("the root rule cannot map repository names (as in ECR)")
            try:
                validate_name(self.upstream_repository_prefix)
            except Exception as exc:
                raise RuleInvalid(f"rule {self.prefix!r}: bad upstream_repository_prefix") from exc
        if self.allowed_tags is not None:
            try:
                re.compile(self.allowed_tags)
            except re.error as exc:
                raise RuleInvalid(f"rule {self.prefix!r}: allowed_tags is not a regular expression: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The rule as stored and shown: only the settings that differ from the defaults (no secret is ever here)."""
        document: dict[str, Any] = {"prefix": self.prefix, "upstream": self.upstream}
        for item in fields(self)[2:]:
            value = getattr(self, item.name)
            if value != item.default:
                document[item.name] = list(value) if isinstance(value, tuple) else value
        if self.expire_unpulled is not None:
            document["expire_unpulled"] = format_duration(self.expire_unpulled)  # 90d reads better than 7776000
        return document

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Rule:
        known = {item.name for item in fields(cls)}
        unknown = set(document) - known
        if unknown:
            raise RuleInvalid(f"unknown rule settings: {sorted(unknown)}")
        values: dict[str, Any] = {key: tuple(v) if isinstance(v, list) else v for key, v in document.items()}
        try:
            if isinstance(values.get("expire_unpulled"), str):
                values["expire_unpulled"] = parse_duration(values["expire_unpulled"])
        except ValueError as exc:
            raise RuleInvalid(f"rule {document.get('prefix')!r}: expire_unpulled: {exc}") from exc
        try:
            return cls(**values)
        except TypeError as exc:
            raise RuleInvalid(f"rule {document.get('prefix')!r}: {exc}") from exc

    @property
    def scope(self) -> str:
        """Cached content is partitioned by rule, so one rule's credentials never serve another's clients."""
        return self.prefix or "(root)"

    @property
    def upstream_base(self) -> str:
        return self.upstream.rstrip("/")

    @property
    def upstream_host(self) -> str:
        return urlsplit(self.upstream).netloc

    def upstream_repository(self, repository: str) -> str:
        if self.upstream_repository_prefix:
            return f"{self.upstream_repository_prefix}/{repository}"
        if self.library_namespace and "/" not in repository:
            return f"library/{repository}"
        return repository

    def client_name(self, repository: str) -> str:
        """The name a client pulls for this upstream repository: the inverse of the routing."""
        if self.upstream_repository_prefix:
            repository = repository.removeprefix(f"{self.upstream_repository_prefix}/")
        return f"{self.prefix}/{repository}" if self.prefix else repository

    def repository_allowed(self, repository: str) -> bool:
        if any(fnmatch.fnmatchcase(repository, pattern) for pattern in self.deny):
            return False
        return not self.allow or any(fnmatch.fnmatchcase(repository, pattern) for pattern in self.allow)

    def tag_fresh(self, checked_at: float, now: float) -> bool:
        """Whether a tag the upstream confirmed at `checked_at` is answered from the cache at `now`."""
        return now - checked_at < self.tag_ttl_seconds

    def tag_allowed(self, tag: str) -> bool:
        return self.allowed_tags is None or re.fullmatch(self.allowed_tags, tag) is not None

    @property
    def pull_record_seconds(self) -> float:
        """How stale a recorded last-pull time may be. Writing it on every request would make every hit a write:
        a minute is plenty, or a tenth of expire_unpulled when that is shorter, so no image expires late by more."""
        if self.expire_unpulled is None:
            return PULL_RECORD_SECONDS
        return min(PULL_RECORD_SECONDS, self.expire_unpulled / 10)

    def pinned(self, repository: str, tag: str) -> bool:
        """Whether `keep` pins repository:tag (the repository as the upstream names it). A glob without a tag part
        pins every tag of the repositories it matches."""
        image = f"{repository}:{tag}"
        for pattern in self.keep:
            if pattern.startswith("re:"):
                if re.fullmatch(pattern[3:], image):
                    return True
            elif fnmatch.fnmatchcase(image, pattern if ":" in pattern else f"{pattern}:*"):
                return True
        return False


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
        repository. Names a rule does not allow are refused here, before anything is fetched."""
        validate_name(name)
        route = self._match(name)
        if not route.rule.repository_allowed(route.repository):
            raise Denied(f"repository {route.repository!r} is not allowed by the cache rule", detail={"name": name})
        return route

    def _match(self, name: str) -> Route:
        for rule in self._rules:
            if name.startswith(rule.prefix + "/"):
                return Route(rule, rule.upstream_repository(name[len(rule.prefix) + 1 :]))
        if self._root is not None:
            return Route(self._root, self._root.upstream_repository(name))
        raise NameUnknown(f"no cache rule matches repository {name!r}", detail={"name": name})

    def for_namespace(self, namespace: str, name: str) -> str | None:
        """The cache's own name for `name` of registry `namespace` (containerd's `ns` when configured as a mirror):
        the first rule whose upstream is that registry, or None."""
        host = DOCKER_HUB_ALIASES.get(namespace, namespace)
        for rule in self:
            if rule.upstream_host == host and not rule.upstream_repository_prefix:
                if not rule.prefix or name.startswith(rule.prefix + "/"):  # a mirror path with the prefix in it
                    return name
                return f"{rule.prefix}/{name}"
        return None

    def by_prefix(self, prefix: str) -> Rule | None:
        return next((rule for rule in self if rule.prefix == prefix), None)

    def by_scope(self, scope: str) -> Rule | None:
        return next((rule for rule in self if rule.scope == scope), None)

    def current(self) -> RuleSet:
        return self


class RuleSource(Protocol):
    def current(self) -> RuleSet: ...


class RuleStore(Protocol):
    """Rules kept in the metadata store (a deployment keeps its rules there; `pullthrough rules` writes them)."""

    def list_rules(self) -> list[Rule]: ...

    def put_rule(self, rule: Rule) -> None: ...

    def delete_rule(self, prefix: str) -> None: ...


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
