"""The `pullthrough` command: one module per command group."""

from __future__ import annotations

import click

from handlers.cli.gc import gc
from handlers.cli.keys import keys
from handlers.cli.refresh import refresh
from handlers.cli.rules import rules
from handlers.cli.serve import serve
from handlers.cli.stats import stats
from handlers.cli.warm import warm


@click.group()
def main() -> None:
    """pullthrough: a pull-through cache for container registries."""


for command in (serve, refresh, gc, stats, warm, rules, keys):
    main.add_command(command)
