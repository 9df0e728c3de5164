"""`pullthrough warm`: pull images through a running cache (a local `serve` or a deployment) so that the first real
pull of each is a hit."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
from rich.console import Console

from handlers.cli.warm_display import Display, LiveDisplay, PlainDisplay
from pullthrough_adapters.warming.client import CacheClient
from pullthrough_adapters.warming.warmer import Image, ImageReport, Warmer

DEFAULT_REGISTRY = "http://127.0.0.1:5000"  # where `pullthrough serve` listens by default
_PLATFORM = re.compile(r"^[a-z0-9._-]+/[a-z0-9._-]+(?:/[a-z0-9._-]+)?\Z")


@click.command()
@click.argument("images", nargs=-1, metavar="IMAGE...")
@click.option("--registry", default=DEFAULT_REGISTRY, show_default=True,
              help="The cache as clients reach it: a local `serve`, or a deployment's "
              "https://RegistryHost.")  # fmt: skip
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Of a multi-platform image, warm this platform (repeatable). Default: every one its index "
              "lists.")  # fmt: skip
@click.option("--file", "image_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="More images, one per line (blank lines and # comments are skipped).")  # fmt: skip
@click.option("--jobs", default=4, show_default=True, type=click.IntRange(1, 32), help="Images warmed at once.")
@click.option("--username", help="A pull key's name, for a cache in token mode.")
@click.option("--password-stdin", is_flag=True, help="Read the pull key's secret from stdin.")
def warm(
    images: tuple[str, ...], registry: str, platforms: tuple[str, ...], image_file: Path | None, jobs: int,
    username: str | None, password_stdin: bool,
) -> None:  # fmt: skip
    """Pull IMAGE... through the cache, as a client would name them (docker-hub/library/alpine:3.20, or
    NAME@sha256:...): manifests, and every config and layer, so that the cache holds them all."""
    names = [*images, *(_listed(image_file) if image_file else [])]
    if not names:
        raise click.UsageError("name at least one image, or a --file of them")
    try:
        wanted = [Image.parse(name) for name in dict.fromkeys(names)]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if not re.match(r"^https?://[^/]", registry):
        raise click.UsageError(f"--registry takes a URL: http://HOST:PORT or https://HOST, not {registry!r}")
    for platform in platforms:
        if not _PLATFORM.match(platform):
            raise click.UsageError(f"--platform takes OS/ARCH[/VARIANT] (linux/arm64/v8), not {platform!r}")
    if bool(username) != password_stdin:
        raise click.UsageError("a pull key takes both --username and --password-stdin")
    credentials = (username, sys.stdin.read().strip()) if username else None
    console = Console()
    display: Display = LiveDisplay(console) if console.is_terminal else PlainDisplay(click.echo)
    reports = run(registry, wanted, display, platforms, jobs, credentials)
    display.summarize(reports)
    if any(report.error is not None for report in reports):
        raise SystemExit(1)


def run(
    registry: str,
    images: Sequence[Image],
    display: Display,
    platforms: Sequence[str] = (),
    jobs: int = 4,
    credentials: tuple[str, str] | None = None,
) -> list[ImageReport]:
    """Warm `images`, `jobs` at a time, telling `display`; an interrupt stops every image at its next chunk."""
    stop = threading.Event()
    warmer = Warmer(CacheClient(registry, credentials, stop=stop), platforms, display)
    with display, ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="warm") as pool:
        futures = [pool.submit(warmer.warm, image) for image in images]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            stop.set()
            pool.shutdown(cancel_futures=True)
            raise


def _listed(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]
