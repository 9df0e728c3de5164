"""What several commands share, declared once: the options, and the store they open."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import click

from core.auth import KeyStore
from core.rules import RuleStore
from handlers.composition.local import metadata_store
from handlers.settings import DataDir

Command = Callable[..., Any]

data_dir_option = click.option(
    "--data-dir", default=".pullthrough", show_default=True, type=click.Path(file_okay=False, path_type=Path),
    help="The local cache's data directory.",
)  # fmt: skip
table_option = click.option("--table", help="A deployment's DynamoDB table (stack output TableName).")
output_option = click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
allow_private_option = click.option(
    "--allow-private-upstreams", is_flag=True,
    help="Let upstreams (and their redirects) be on loopback or private addresses: for local testing.",
)  # fmt: skip
rules_file_option = click.option(
    "--rules", "rules_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML/JSON rules file; without it, the built-in rules and those stored with `pullthrough rules`.",
)  # fmt: skip


def backend_options(command: Command) -> Command:
    """--data-dir for the local cache or --table for a deployment, and --output."""
    return data_dir_option(table_option(output_option(command)))


class AdminStore(KeyStore, RuleStore, Protocol):
    """What `pullthrough rules` and `pullthrough keys` change: either backend has both."""


def open_store(data_dir: Path, table: str | None) -> AdminStore:
    if table:
        from handlers.composition.aws import table_store  # boto3 only for those who manage a deployment
        from handlers.settings import AwsSettings

        return table_store(AwsSettings(table=table))
    return metadata_store(DataDir(data_dir))
