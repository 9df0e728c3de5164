"""Rules files (YAML, so JSON too) and the built-in rules for the common public registries."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.rules import DEFAULT_MAX_BLOB_BYTES, DEFAULT_TAG_TTL_SECONDS, ROOT_PREFIX, Rule, RuleInvalid, RuleSet

DOCKER_HUB = "https://registry-1.docker.io"
PRESETS = {
    "docker-hub": Rule("docker-hub", DOCKER_HUB, library_namespace=True),
    "ghcr": Rule("ghcr", "https://ghcr.io"),
    "quay": Rule("quay", "https://quay.io"),
    "ecr-public": Rule("ecr-public", "https://public.ecr.aws"),
    "k8s": Rule("k8s", "https://registry.k8s.io"),  # redirects to Artifact Registry: the client re-authenticates
    "mcr": Rule("mcr", "https://mcr.microsoft.com"),
    "gcr": Rule("gcr", "https://gcr.io"),
    "artifact-registry": Rule("artifact-registry", "https://us-docker.pkg.dev"),
    "gitlab": Rule("gitlab", "https://registry.gitlab.com"),
    # The root rule: Docker's registry-mirrors sends /v2/library/alpine/..., with no room for a prefix.
    "docker-hub-root": Rule(ROOT_PREFIX, DOCKER_HUB, library_namespace=True),
}
BUILTIN_RULES = tuple(PRESETS.values())
TOKEN_SERVICE = "pullthrough"  # the `service` of our own registry tokens


def with_stored_rules(builtins: Iterable[Rule], stored: Iterable[Rule]) -> RuleSet:
    """The built-in rules, each replaced by a stored rule with the same prefix, and the other stored rules."""
    by_prefix = {rule.prefix: rule for rule in builtins}
    by_prefix.update({rule.prefix: rule for rule in stored})
    return RuleSet(by_prefix.values())


def preset_rules(names: str) -> list[Rule]:
    """Rules for a comma-separated list of preset names (how the SAM template enables built-in upstreams)."""
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in PRESETS]
    if unknown:
        raise RuleInvalid(f"unknown upstream presets {unknown}; known: {sorted(PRESETS)}")
    return [PRESETS[name] for name in chosen]


class RuleConfig(BaseModel):
    """A rule as written in a rules file; types are checked here, meaning in core.rules.Rule."""

    model_config = ConfigDict(extra="forbid")

    prefix: str
    upstream: str
    tag_ttl_seconds: int = Field(default=DEFAULT_TAG_TTL_SECONDS, ge=0)
    library_namespace: bool = False
    credentials: str | None = None  # env:NAME, file:PATH or a Secrets Manager ARN: never the secret itself
    max_stale_seconds: int | None = Field(default=None, ge=0)
    prefetch_platforms: list[str] = Field(default_factory=list)
    upstream_repository_prefix: str | None = None
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    allowed_tags: str | None = None
    max_blob_bytes: int = Field(default=DEFAULT_MAX_BLOB_BYTES, ge=1)

    def to_rule(self) -> Rule:
        return Rule.from_dict(self.model_dump(exclude_defaults=True) | {"prefix": self.prefix})


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[RuleConfig]


def parse_rule(document: dict[str, Any]) -> Rule:
    """A rule from its settings, as the CLI, the admin API and rules files give them: types, then meaning."""
    try:
        return RuleConfig.model_validate(document).to_rule()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
        raise RuleInvalid(f"rule {document.get('prefix')!r}: {problems}") from exc


def load_rules(path: Path | None) -> RuleSet:
    if path is None:
        return RuleSet(BUILTIN_RULES)
    try:
        document = yaml.safe_load(path.read_text())
        parsed = RulesFile.model_validate(document)
    except (OSError, yaml.YAMLError) as exc:
        raise RuleInvalid(f"cannot read rules file {path}: {exc}") from exc
    except ValidationError as exc:
        raise RuleInvalid(f"rules file {path} is invalid:\n{exc}") from exc
    return RuleSet(rule.to_rule() for rule in parsed.rules)
