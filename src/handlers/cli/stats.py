"""`pullthrough stats`: what the cache holds per rule, how it was used over a day and a week, how its upstreams are."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from core.stats import Report
from core.usage import Traffic
from handlers.cli.options import backend_options, rules_file_option
from handlers.composition.local import build_report as local_report
from handlers.settings import DataDir, LocalSettings


@click.command()
@backend_options
@rules_file_option
def stats(data_dir: Path, table: str | None, output: str, rules_file: Path | None) -> None:
    """Per rule: repositories, tags, images with referrers (signatures, SBOMs), manifests, blobs and bytes stored;
    hits, upstream requests saved and bytes over 24 hours and 7 days; the most pulled repositories; the last pull;
    the upstream's health."""
    if table:
        from handlers.composition.aws_scheduled import build_report  # boto3 only for a deployment
        from handlers.settings import AwsSettings

        report = build_report(AwsSettings(table=table, endpoint_url=os.environ.get("AWS_ENDPOINT_URL")), rules_file)
    else:
        report = local_report(LocalSettings(DataDir(data_dir.resolve()), auth="none", public_url="",
                                            rules_file=rules_file))  # fmt: skip
    click.echo(json.dumps(report.to_dict(), indent=2) if output == "json" else _table(report))


def _table(report: Report) -> str:
    header = (f"{'rule':<20} {'health':<11} {'repos':>6} {'tags':>6} {'w/refs':>6} {'stored':>10} {'hits 24h':>9} "
              f"{'ratio 24h':>9} "
              f"{'hits 7d':>8} {'ratio 7d':>8} {'fetched 7d':>10} {'served 7d':>10}  last pull")  # fmt: skip
    lines = [header]
    for rule in report.rules:
        held, day, week = rule.inventory, rule.day, rule.week
        lines.append(
            f"{rule.prefix or '(root)':<20} {rule.health.state:<11} {held.repositories:>6} {held.tags:>6} "
            f"{held.images_with_referrers:>6} {_bytes(held.bytes_stored):>10} {day.hits:>9.0f} {_ratio(day):>9} "
            f"{week.hits:>8.0f} {_ratio(week):>8} "
            f"{_bytes(week.upstream_bytes):>10} {_bytes(week.served_bytes):>10}  {_when(held.last_pull)}"
        )
    lines.append(
        f"all rules: {_ratio(report.day)} of {report.day.requests:.0f} requests answered from the cache in 24 h "
        f"({report.day.hits:.0f} upstream requests saved), {_ratio(report.week)} of {report.week.requests:.0f} in 7 d"
    )
    for rule in report.rules:
        if rule.health.state != "up":
            lines.append(
                f"{rule.upstream}: {rule.health.state} ({rule.health.failures} failures: {rule.health.reason})"
            )
        if rule.most_pulled:
            popular = ", ".join(f"{name} ({pulls})" for name, pulls in rule.most_pulled)
            lines.append(f"most pulled via {rule.prefix or '(root)'} in 7 d: {popular}")
    return "\n".join(lines)


def _ratio(window: Traffic) -> str:
    return "-" if window.hit_ratio is None else f"{window.hit_ratio:.1%}"


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp)) if timestamp else "never"
