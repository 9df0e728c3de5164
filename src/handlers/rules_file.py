"""Rules as people write them: rules files (YAML, so JSON too), and the settings the CLI and the admin API take.
Types are checked here; what the settings mean, in core.rules.Rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.durations import parse_duration
from core.rules import DEFAULT_MAX_BLOB_BYTES, DEFAULT_TAG_TTL_SECONDS, Rule, RuleInvalid, RuleSet
from handlers.presets import BUILTIN_RULES


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
    expire_unpulled: int | None = None  # written as 90d, 12h, 30s (or seconds); none: keep forever
    keep: list[str] = Field(default_factory=list)

    @field_validator("expire_unpulled", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

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
    import yaml  # only a rules file needs it, and the Lambda functions read none

    try:
        document = yaml.safe_load(path.read_text())
        parsed = RulesFile.model_validate(document)
    except (OSError, yaml.YAMLError) as exc:
        raise RuleInvalid(f"cannot read rules file {path}: {exc}") from exc
    except ValidationError as exc:
        raise RuleInvalid(f"rules file {path} is invalid:\n{exc}") from exc
    return RuleSet(rule.to_rule() for rule in parsed.rules)
