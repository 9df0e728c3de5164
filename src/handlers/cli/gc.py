"""`pullthrough gc`: the lifecycle sweep on demand (locally, or on a deployment's table and bucket)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from core.durations import parse_duration, parse_size
from core.lifecycle import Lifecycler, SweepReport
from core.rules import RuleInvalid
from handlers.cli.options import data_dir_option, output_option, rules_file_option, table_option
from handlers.composition.local import blob_store, build_lifecycler
from handlers.logs import configure_logging
from handlers.settings import AWS_GRACE_SECONDS, LOCAL_GRACE_SECONDS, DataDir, LocalSettings


@click.command()
@data_dir_option
@table_option
@click.option("--bucket", help="The deployment's S3 bucket (stack output BucketName), with --table.")
@rules_file_option
@click.option("--dry-run", is_flag=True, help="Change nothing; print what would be forgotten and deleted.")
@click.option("--grace", help=f"Keep orphaned bytes this long before deleting them (default {LOCAL_GRACE_SECONDS} s "
              f"locally, {AWS_GRACE_SECONDS // 3600} h on a deployment): 30s, 10m, 2h.")  # fmt: skip
@click.option("--max-cache-size", help="Also evict the least recently pulled images down to this size: 50GiB.")
@output_option
def gc(
    data_dir: Path, table: str | None, bucket: str | None, rules_file: Path | None, dry_run: bool, grace: str | None,
    max_cache_size: str | None, output: str,
) -> None:  # fmt: skip
    """Forget images nobody pulled within their rule's expire_unpulled (pinned ones never), then delete the bytes
    no repository records any more once they have been orphaned for the grace period."""
    try:
        grace_seconds = parse_duration(grace) if grace else None
        cap = parse_size(max_cache_size) if max_cache_size else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    configure_logging("warning")
    try:
        if table:
            if not bucket:
                raise click.UsageError("--table needs --bucket too: the bytes are in the deployment's bucket")
            if cap is not None:
                raise click.UsageError("--max-cache-size is for a local data directory")
            from handlers.composition.aws_scheduled import build_lifecycler as table_lifecycler  # boto3 only here
            from handlers.settings import AwsSettings

            deployment = AwsSettings(table=table, bucket=bucket, endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
            grace_seconds = _given_or(grace_seconds, AWS_GRACE_SECONDS)
            lifecycler = table_lifecycler(deployment, rules_file, grace_seconds=grace_seconds, dry_run=dry_run)
            reports = [lifecycler.sweep()]
        else:
            settings = LocalSettings(DataDir(data_dir.resolve()), auth="none", public_url="", rules_file=rules_file)
            lifecycler = build_lifecycler(settings, grace_seconds=_given_or(grace_seconds, LOCAL_GRACE_SECONDS),
                                          dry_run=dry_run)  # fmt: skip
            reports = [lifecycler.sweep()]
            if cap is not None:
                reports.append(_evict(lifecycler, settings.data_dir, cap))
    except RuleInvalid as exc:
        raise click.UsageError(str(exc)) from exc
    _show(reports, output, dry_run)


def _given_or(given: int | None, default: int) -> int:
    return default if given is None else given  # `--grace 0s` is a grace of nothing, not the default


def _evict(lifecycler: Lifecycler, data_dir: DataDir, cap: int) -> SweepReport:
    return lifecycler.evict(blob_store(data_dir).usage(), cap)


def _show(reports: list[SweepReport], output: str, dry_run: bool) -> None:
    if output == "json":
        click.echo(json.dumps([report.to_dict() for report in reports], indent=2))
        return
    verb = "would forget" if dry_run else "forgot"
    for report in reports:
        for event in report.expired:
            name = f"{event.repository_name}:{event.image_tag}" if event.image_tag else event.repository_name
            click.echo(f"{verb}\t{name}\t{event.image_digest}")
        click.echo(
            f"{report.repositories} repositories; {verb} {report.tags_forgotten} tags, {report.manifests_forgotten} "
            f"manifests, {report.blobs_forgotten} blob records; {report.orphaned} digests ({report.orphaned_bytes} "
            f"bytes) no longer recorded; {'would delete' if dry_run else 'deleted'} {report.deleted} past their "
            f"grace ({report.reclaimed_bytes} bytes)"
        )
