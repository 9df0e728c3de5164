"""`pullthrough rules ...`: the same words for the local cache (--data-dir) and a deployment (--table)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from core.rules import Rule, RuleInvalid
from handlers.cli.options import allow_private_option, backend_options, open_store
from handlers.presets import PRESETS
from handlers.rules_file import load_rules, parse_rule
from pullthrough_adapters.upstream.addresses import AddressPolicy
from pullthrough_adapters.upstream.validation import validate_rule_now

FIELDS = ("prefix", "upstream", "tag_ttl_seconds", "library_namespace", "credentials", "upstream_repository_prefix",
          "allow", "deny", "allowed_tags", "max_stale_seconds", "prefetch_platforms", "max_blob_bytes",
          "expire_unpulled", "keep")  # fmt: skip


def rule_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--upstream", help="Registry URL, e.g. https://ghcr.io."),
        click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Start from a known upstream's settings."),
        click.option("--tag-ttl", "tag_ttl_seconds", type=int, help="Seconds a tag is served without asking."),
        click.option("--library-namespace/--no-library-namespace", default=None, help="alpine -> library/alpine."),
        click.option("--credentials", help="env:NAME, file:PATH or a Secrets Manager ARN."),
        click.option("--upstream-repository-prefix", help="Map PREFIX/x to UPSTREAM_PREFIX/x upstream."),
        click.option("--allow", multiple=True, help="Allowed upstream repositories (glob; repeat)."),
        click.option("--deny", multiple=True, help="Denied upstream repositories (glob; repeat)."),
        click.option("--allowed-tags", help="Regular expression tags must match."),
        click.option("--max-stale", "max_stale_seconds", type=int, help="Oldest copy served when upstream fails."),
        click.option("--prefetch-platform", "prefetch_platforms", multiple=True, help="os/arch[/variant]; repeat."),
        click.option("--max-blob-bytes", "max_blob_bytes", type=int, help="Largest upstream blob fetched."),
        click.option("--expire-unpulled", help="Forget images nobody pulled for this long: 90d, 12h, 30s."),
        click.option("--keep", multiple=True, help="Pin repository:tag globs (or re:REGEX); repeat."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _settings(given: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in given.items() if value not in (None, ())}  # fmt: skip


def _show(rules: list[Rule], output: str) -> None:
    if output == "json":
        click.echo(json.dumps([rule.to_dict() for rule in rules], indent=2))
        return
    rows = [[str(rule.to_dict().get(name, "")) for name in FIELDS[:6]] for rule in rules]
    widths = [max(len(name), *(len(row[i]) for row in rows)) for i, name in enumerate(FIELDS[:6])]
    for row in [list(FIELDS[:6]), *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _build(settings: dict[str, Any]) -> Rule:
    try:
        return parse_rule(settings)
    except RuleInvalid as exc:
        raise click.UsageError(str(exc)) from exc


@click.group()
def rules() -> None:
    """Cache rules: which prefix leads to which upstream, and how."""


@rules.command()
@click.argument("prefix")
@rule_options
@backend_options
def create(prefix: str, preset: str | None, data_dir: Path, table: str | None, output: str, **given: Any) -> None:
    """Create a rule (PREFIX "" is the root rule)."""
    store = open_store(data_dir, table)
    if any(rule.prefix == prefix for rule in store.list_rules()):
        raise click.UsageError(f"a rule for {prefix!r} exists; use update")
    base = PRESETS[preset].to_dict() if preset else {}
    rule = _build({**base, **_settings(given), "prefix": prefix})
    store.put_rule(rule)
    _show([rule], output)


@rules.command()
@click.argument("prefix")
@rule_options
@backend_options
def update(prefix: str, preset: str | None, data_dir: Path, table: str | None, output: str, **given: Any) -> None:
    """Change the given settings of a rule; the others stay."""
    store = open_store(data_dir, table)
    current = next((rule for rule in store.list_rules() if rule.prefix == prefix), None)
    if current is None:
        raise click.UsageError(f"no rule for {prefix!r}")
    base = PRESETS[preset].to_dict() if preset else {}
    rule = _build({**current.to_dict(), **base, **_settings(given), "prefix": prefix})
    store.put_rule(rule)
    _show([rule], output)


@rules.command()
@click.argument("prefixes", nargs=-1)
@backend_options
def describe(prefixes: tuple[str, ...], data_dir: Path, table: str | None, output: str) -> None:
    """Show stored rules (all, or those named)."""
    stored = open_store(data_dir, table).list_rules()
    _show([rule for rule in stored if not prefixes or rule.prefix in prefixes], output)


@rules.command()
@click.argument("prefix")
@backend_options
def delete(prefix: str, data_dir: Path, table: str | None, output: str) -> None:
    """Delete a rule. What it cached stays, as with ECR."""
    store = open_store(data_dir, table)
    if not any(rule.prefix == prefix for rule in store.list_rules()):
        raise click.UsageError(f"no rule for {prefix!r}")
    store.delete_rule(prefix)
    click.echo(json.dumps({"deleted": prefix}) if output == "json" else f"deleted {prefix or '(root)'}")


@rules.command()
@click.argument("rules_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--prune", is_flag=True, help="Also delete stored rules the file does not name.")
@backend_options
def apply(rules_file: Path, prune: bool, data_dir: Path, table: str | None, output: str) -> None:
    """Make the stored rules what a rules file says (declarative)."""
    try:
        wanted = list(load_rules(rules_file))
    except RuleInvalid as exc:
        raise click.UsageError(str(exc)) from exc
    store = open_store(data_dir, table)
    for rule in wanted:
        store.put_rule(rule)
    if prune:
        for rule in store.list_rules():
            if rule.prefix not in {wanted_rule.prefix for wanted_rule in wanted}:
                store.delete_rule(rule.prefix)
    _show(store.list_rules(), output)


@rules.command()
@click.argument("prefix")
@click.option("--image", help="A REPOSITORY:TAG to look up through the rule, e.g. library/alpine:3.20.")
@allow_private_option
@backend_options
def validate(
    prefix: str, image: str | None, allow_private_upstreams: bool, data_dir: Path, table: str | None, output: str
) -> None:
    """Contact the rule's upstream with its credentials: reachable? credentials accepted? image found?"""
    stored = {rule.prefix: rule for rule in open_store(data_dir, table).list_rules()}
    rule = stored.get(prefix) or next((preset for preset in PRESETS.values() if preset.prefix == prefix), None)
    if rule is None:
        raise click.UsageError(f"no rule for {prefix!r}")
    result = validate_rule_now(rule, AddressPolicy(allow_private=allow_private_upstreams), image)
    if output == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for key, value in result.to_dict().items():
            click.echo(f"{key}: {value}")
    if not result.valid:
        raise SystemExit(1)
