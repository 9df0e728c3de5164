"""The built-in rules for the common public registries, and how stored rules join them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from core.rules import ROOT_PREFIX, Rule, RuleInvalid, RuleSet

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


def with_stored_rules(builtins: Iterable[Rule], stored: Iterable[Rule]) -> RuleSet:
    """The built-in rules, each replaced by a stored rule with the same prefix, and the other stored rules."""
    by_prefix = {rule.prefix: rule for rule in builtins}
    by_prefix.update({rule.prefix: rule for rule in stored})
    return RuleSet(by_prefix.values())


def preset_rules(names: str, expire_unpulled: int | None = None) -> list[Rule]:
    """Rules for a comma-separated list of preset names (how the SAM template enables built-in upstreams), with the
    template's expiry for built-in rules."""
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in PRESETS]
    if unknown:
        raise RuleInvalid(f"unknown upstream presets {unknown}; known: {sorted(PRESETS)}")
    return [replace(PRESETS[name], expire_unpulled=expire_unpulled) for name in chosen]
