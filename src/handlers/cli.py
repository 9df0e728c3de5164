"""The `pullthrough` command."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
import uvicorn

from core.rules import RuleInvalid
from handlers.config import load_rules
from handlers.local import DATA_DIR_ENV, RULES_FILE_ENV


@click.group()
def main() -> None:
    """pullthrough: a pull-through cache for container registries."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--data-dir", default=".pullthrough", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML/JSON rules file; without it, the built-in rules for the public registries apply.")  # fmt: skip
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
def serve(
    host: str, port: int, data_dir: Path, rules_file: Path | None, workers: int, access_log: bool, log_level: str
) -> None:
    """Start the cache as a local registry."""
    try:
        rules = load_rules(rules_file)
    except RuleInvalid as exc:
        raise click.UsageError(str(exc)) from exc
    data_dir = data_dir.resolve()
    os.environ[DATA_DIR_ENV] = str(data_dir)
    if rules_file is not None:
        os.environ[RULES_FILE_ENV] = str(rules_file.resolve())
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream request is the access log's job
    prefixes = ", ".join(f"{rule.prefix or '(root)'} -> {rule.upstream}" for rule in rules)
    click.echo(f"pullthrough on http://{host}:{port} (data in {data_dir}); rules: {prefixes}", err=True)
    uvicorn.run(
        "handlers.local:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        http="httptools",
        loop="uvloop",
        timeout_keep_alive=30,
    )
