"""What `pullthrough warm` shows: live progress bars on a terminal, one line per event otherwise, and a summary.

The bars count bytes the cache confirmed it holds: read through it, or a whole blob it answered with a redirect to
its storage.

docs/warm-progress.svg (README.md, "Warm the cache") is a real run's display, caught once 30 MB were in: a fresh
`pullthrough serve` whose rule `up` leads to a distribution registry holding the test images. Made with (from the
repository's root, PYTHONPATH=.):

    import io, tempfile, threading, time
    from pathlib import Path
    from rich.console import Console
    from handlers.cli.warm import run
    from handlers.cli.warm_display import LiveDisplay
    from pullthrough_adapters.warming.warmer import Image
    from tests.e2e.conftest import cache_rules
    from tests.support.images import push_test_images
    from tests.support.pullthrough import PullthroughServer
    from tests.support.upstream import DistributionRegistry

    work = Path(tempfile.mkdtemp())
    with DistributionRegistry(work / "up") as upstream:
        push_test_images(upstream.host, work / "images")
        with PullthroughServer(work / "cache", cache_rules(upstream)) as cache:
            names = [f"up/library/{name}:v1" for name in ("big", "multi-oci", "single-docker", "gone")]
            display = LiveDisplay(Console(width=110, file=io.StringIO()))
            warming = threading.Thread(target=run, args=(cache.url, [Image.parse(n) for n in names], display))
            warming.start()
            while display.progress.tasks[0].completed < 30e6:
                time.sleep(0.001)
            recorder = Console(record=True, width=110, force_terminal=True, file=io.StringIO())
            recorder.print(display.progress)
            recorder.save_svg("docs/warm-progress.svg", title="pullthrough warm")
            warming.join()
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from core.digest import Digest
from pullthrough_adapters.warming.client import BlobAnswer
from pullthrough_adapters.warming.warmer import Image, ImageReport, WarmEvents

STEP_WIDTH = 48


class Display(WarmEvents, Protocol):
    """Shown while the images are warmed (a context), then the summary."""

    def __enter__(self) -> Display: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def summarize(self, reports: Sequence[ImageReport]) -> None: ...


class LiveDisplay:
    """A bar per image started, under one for the bytes of every image planned so far."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=32),
            DownloadColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[step]}", style="dim"),
            console=console,
        )
        self._total = self.progress.add_task("[bold]total", total=0, step="")
        self._tasks: dict[Image, TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> LiveDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def started(self, image: Image) -> None:
        with self._lock:
            self._tasks[image] = self.progress.add_task(str(image), total=None, step="manifests")

    def planned(self, report: ImageReport) -> None:
        task = self._tasks[report.image]
        self.progress.update(task, total=report.size, step=f"{_count(report.blobs, 'blob')}")
        with self._lock:  # two images may plan at once
            total = self.progress.tasks[self._total].total or 0
            self.progress.update(self._total, total=total + report.size)

    def blob_started(self, image: Image, digest: Digest, size: int) -> None:
        self.progress.update(self._tasks[image], step=f"{_short(digest)} {decimal(size)}")

    def confirmed(self, image: Image, size: int) -> None:
        self.progress.advance(self._tasks[image], size)
        self.progress.advance(self._total, size)

    def blob_done(self, image: Image, digest: Digest, size: int, answer: BlobAnswer) -> None:
        """The bars say it all."""

    def waiting(self, image: Image, reason: str) -> None:
        self.progress.update(self._tasks[image], step=escape(_cut(f"waiting: {reason}")))

    def finished(self, report: ImageReport) -> None:
        task = self._tasks[report.image]
        if report.error is None:
            self.progress.update(task, step="[green]warm")
        else:
            self.progress.update(task, total=report.size, step=f"[red]{escape(_cut(f'failed: {report.error}'))}")

    def summarize(self, reports: Sequence[ImageReport]) -> None:
        table = Table("image", "manifests", "blobs", "size", "cached before", "fetched", "result", box=None)
        for report in reports:
            table.add_row(
                str(report.image), str(report.manifests), str(report.blobs), decimal(report.size),
                decimal(report.cached_bytes), decimal(report.fetched_bytes),
                Text(report.error, style="red") if report.error else Text("warm", style="green"),
            )  # fmt: skip
        self._console.print(table)
        self._console.print(totals(reports), highlight=False)


class PlainDisplay:
    """One line per event, for logs and pipes."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self._echo = echo
        self._lock = threading.Lock()

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def _line(self, image: Image, text: str) -> None:
        with self._lock:  # whole lines, whichever thread writes
            self._echo(f"{image}: {text}")

    def started(self, image: Image) -> None:
        self._line(image, "warming")

    def planned(self, report: ImageReport) -> None:
        blobs = _count(report.blobs, "blob")
        self._line(report.image, f"{_count(report.manifests, 'manifest')}, {blobs}, {decimal(report.size)}")

    def blob_started(self, image: Image, digest: Digest, size: int) -> None:
        """Only what is done gets a line."""

    def confirmed(self, image: Image, size: int) -> None:
        """Bytes are counted in the lines of whole blobs."""

    def blob_done(self, image: Image, digest: Digest, size: int, answer: BlobAnswer) -> None:
        if answer.cached:
            how = "cached before, redirected to storage" if answer.redirected else "cached before"
        elif answer.redirected:
            how = "redirected to storage, fetched"
        else:
            how = f"{decimal(answer.bytes_read)} read, fetched"
        self._line(image, f"{digest} {how}")

    def waiting(self, image: Image, reason: str) -> None:
        self._line(image, f"waiting: {reason}")

    def finished(self, report: ImageReport) -> None:
        if report.error is None:
            cached, fetched = decimal(report.cached_bytes), decimal(report.fetched_bytes)
            self._line(report.image, f"warm ({cached} cached before, {fetched} fetched)")
        else:
            self._line(report.image, f"failed: {report.error}")

    def summarize(self, reports: Sequence[ImageReport]) -> None:
        self._echo(totals(reports))


def totals(reports: Sequence[ImageReport]) -> str:
    """One line for the whole run."""
    failed = sum(report.error is not None for report in reports)
    blobs = sum(report.blobs for report in reports)
    size, read = sum(report.size for report in reports), sum(report.bytes_read for report in reports)
    redirected = sum(report.redirected_bytes for report in reports)
    cached, fetched = sum(report.cached_bytes for report in reports), sum(report.fetched_bytes for report in reports)
    return (f"{len(reports) - failed} of {_count(len(reports), 'image')} warm, {failed} failed; "
            f"{_count(blobs, 'blob')}, {decimal(size)}: {decimal(cached)} cached before, {decimal(fetched)} fetched "
            f"({decimal(read)} read, {decimal(redirected)} redirected to storage)")  # fmt: skip


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _short(digest: Digest) -> str:
    return f"{digest.algorithm}:{digest.encoded[:12]}"


def _cut(text: str) -> str:
    return text if len(text) <= STEP_WIDTH else text[: STEP_WIDTH - 1] + "…"
