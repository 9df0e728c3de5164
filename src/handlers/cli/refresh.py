"""`pullthrough refresh`: the scheduled job of the local cache, or the refresh of one image."""

from __future__ import annotations

from pathlib import Path

import click

from core.rules import RuleInvalid
from handlers.cli.options import allow_private_option, data_dir_option, rules_file_option
from handlers.composition.local import build_refresher
from handlers.logs import configure_logging
from handlers.settings import DataDir, LocalSettings, UpstreamSettings


@click.command()
@click.argument("reference", required=False)
@data_dir_option
@rules_file_option
@click.option("--window-days", default=30.0, show_default=True, help="Refresh tags pulled within this many days.")
@click.option("--limit", default=500, show_default=True, help="At most this many tags per run.")
@allow_private_option
def refresh(
    reference: str | None, data_dir: Path, rules_file: Path | None, window_days: float, limit: int,
    allow_private_upstreams: bool,
) -> None:  # fmt: skip
    """Revalidate stale, recently pulled tags with the upstream (the scheduled job), or one image: PREFIX/REPO:TAG."""
    settings = LocalSettings(DataDir(data_dir.resolve()), auth="none", public_url="", rules_file=rules_file,
                             upstream=UpstreamSettings(allow_private=allow_private_upstreams))  # fmt: skip
    try:
        refresher = build_refresher(settings)
    except RuleInvalid as exc:
        raise click.UsageError(str(exc)) from exc
    configure_logging("info", format="%(message)s")
    if reference is not None:
        name, _, tag = reference.rpartition(":")
        if not name or "/" in tag:
            raise click.UsageError("give the image as PREFIX/REPOSITORY:TAG")
        outcomes = [refresher.refresh_tag(name, tag)]
    else:
        outcomes = refresher.refresh_stale(pulled_within_seconds=window_days * 86400, limit=limit)
    for outcome in outcomes:
        change = outcome.reason or (
            f"{outcome.previous_digest} -> {outcome.digest}" if outcome.status == "updated" else outcome.digest
        )
        click.echo(f"{outcome.name}:{outcome.tag}\t{outcome.status}\t{change}")
    if reference is None:
        click.echo(f"{len(outcomes)} tags revalidated", err=True)
    if any(outcome.status == "failed" for outcome in outcomes):
        raise SystemExit(1)
