"""pullthrough vs distribution 2.8 in proxy mode, side by side, against one real upstream registry.

Prints a Markdown table: pull times (skopeo, cold and warm), what reached the upstream (requests and bytes),
warm manifest requests per second (wrk, 16 connections, by tag and by digest), and peak memory while filling a
1 GiB blob. Everything runs on 127.0.0.1. Run by hand (`make bench`); it takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.clients import skopeo_copy, verify_dir_digests
from tests.support.images import OCI_MANIFEST, TestImage, make_big_blob_image, push_test_images
from tests.support.pullthrough import PullthroughServer
from tests.support.upstream import DistributionRegistry, summarize

PREFIX = "up"


@dataclass
class Measure:
    seconds: float
    requests: int
    upstream_bytes: int


class Subject:
    """One cache under test: where clients pull from, and how it names the upstream's repositories."""

    def __init__(self, name: str, host: str, prefix: str, pid: int) -> None:
        self.name, self.host, self.prefix, self.pid = name, host, prefix, pid


def timed_pull(ref: str, upstream: DistributionRegistry, out: Path) -> Measure:
    mark = upstream.mark()
    started = time.perf_counter()
    skopeo_copy(ref, out)
    elapsed = time.perf_counter() - started
    verify_dir_digests(out)
    requests, sent = summarize(upstream.requests_since(mark))
    shutil.rmtree(out)
    return Measure(elapsed, requests, sent)


def wrk(url: str, accept: str, seconds: int, connections: int) -> float:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-H", f"Accept: {accept}", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw errors from {url}:\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert match, output
    return float(match.group(1))


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match
    return int(match.group(1)) / 1024


def fill_big_blob(subject: Subject, image: TestImage) -> tuple[float, float]:
    """Pull a cold blob with curl (discarding it) and return (seconds, peak RSS of the cache in MiB)."""
    name = "/".join(part for part in (subject.prefix, image.repository) if part)
    url = f"http://{subject.host}/v2/{name}/blobs/{image.largest_blob}"
    os.sync()  # both caches write the blob: each starts with no other write-back pending (building the image is)
    started = time.perf_counter()
    received = subprocess.run(
        ["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", url], capture_output=True, text=True, check=True
    ).stdout
    elapsed = time.perf_counter() - started
    assert int(received) >= 1 << 30 or int(received) > 0
    return elapsed, peak_rss_mib(subject.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="pullthrough server processes (2 cores here)")
    parser.add_argument("--big-mib", type=int, default=1024, help="size of the blob for the memory figure")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the fleet scenario")
    parser.add_argument("--repeat", type=int, default=15, help="fresh caches for the median pull times")
    parser.add_argument("--fleet-image", choices=["big", "multi"], default="big")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pullthrough-bench-"))
    rows: dict[str, dict[str, str]] = {}
    try:
        with DistributionRegistry(work / "upstream") as upstream:
            images = push_test_images(upstream.host, work / "images")
            big = images["big"]
            rules = [{"prefix": PREFIX, "upstream": upstream.url, "tag_ttl_seconds": 86400}]
            with (
                PullthroughServer(work / "pullthrough", rules, workers=args.workers) as pullthrough,
                DistributionRegistry(work / "proxy", proxy_remote_url=upstream.url) as proxy,
            ):
                assert pullthrough._proc is not None and proxy._proc is not None
                subjects = [
                    Subject(f"pullthrough ({args.workers} workers)", pullthrough.host, PREFIX, pullthrough._proc.pid),
                    Subject("distribution 2.8 proxy", proxy.host, "", proxy._proc.pid),
                ]
                direct = timed_pull(big.ref(upstream.host), upstream, work / "direct")
                rows["straight from the upstream"] = {s.name: f"{direct.seconds:.2f} s" for s in subjects}
                for subject in subjects:
                    measure_pulls(subject, big, upstream, work, rows)
                    measure_rates(subject, big, upstream, args, rows)
            median_rows(work, upstream, big, rules, args, rows, [s.name for s in subjects])
            fleet_rows(work, upstream, images, rules, args, rows, [s.name for s in subjects])
            memory_rows(work, upstream, rules, args, rows, [s.name for s in subjects])
        print_table(rows, [s.name for s in subjects], big)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_pulls(subject: Subject, image: TestImage, upstream: DistributionRegistry, work: Path,
                  rows: dict[str, dict[str, str]]) -> None:  # fmt: skip
    for label, ref in (
        ("cold pull by tag", image.ref(subject.host, subject.prefix)),
        ("warm pull by tag", image.ref(subject.host, subject.prefix)),
        ("warm pull by digest", image.ref_by_digest(subject.host, subject.prefix)),
    ):
        measure = timed_pull(ref, upstream, work / "out")
        rows.setdefault(f"{label}: time", {})[subject.name] = f"{measure.seconds:.2f} s"
        rows.setdefault(f"{label}: upstream requests", {})[subject.name] = str(measure.requests)
        rows.setdefault(f"{label}: upstream bytes", {})[subject.name] = f"{measure.upstream_bytes / 1e6:.1f} MB"


def measure_rates(subject: Subject, image: TestImage, upstream: DistributionRegistry, args: argparse.Namespace,
                  rows: dict[str, dict[str, str]]) -> None:  # fmt: skip
    base = f"http://{subject.host}/v2/{'/'.join(p for p in (subject.prefix, image.repository) if p)}/manifests"
    for label, reference in (("by tag", image.tag), ("by digest", image.digest)):
        mark = upstream.mark()
        rate = wrk(f"{base}/{reference}", OCI_MANIFEST, args.seconds, args.connections)
        requests, _ = summarize(upstream.requests_since(mark))
        rows.setdefault(f"warm manifest req/s {label} ({args.connections} conn.)", {})[subject.name] = f"{rate:,.0f}"
        rows.setdefault(f"  upstream requests during that run ({label})", {})[subject.name] = f"{requests:,}"


def median_rows(work: Path, upstream: DistributionRegistry, image: TestImage, rules: list[dict[str, object]],
                args: argparse.Namespace, rows: dict[str, dict[str, str]], names: list[str]) -> None:  # fmt: skip
    """Loopback pull times move by a tenth of a second from run to run: medians over fresh caches, taking turns at
    going first so that neither always pulls right after the other."""
    cold: dict[str, list[float]] = {name: [] for name in names}
    warm: dict[str, list[float]] = {name: [] for name in names}

    def pull_twice(name: str, cache: PullthroughServer | DistributionRegistry, prefix: str) -> None:
        cold[name].append(timed_pull(image.ref(cache.host, prefix), upstream, work / "out").seconds)
        warm[name].append(timed_pull(image.ref(cache.host, prefix), upstream, work / "out").seconds)

    for run in range(args.repeat):
        subjects: list[tuple[str, PullthroughServer | DistributionRegistry, str]] = [
            (names[0], PullthroughServer(work / f"pullthrough-{run}", rules, workers=args.workers), PREFIX),
            (names[1], DistributionRegistry(work / f"proxy-{run}", proxy_remote_url=upstream.url), ""),
        ]
        for name, cache, prefix in subjects if run % 2 == 0 else reversed(subjects):
            with cache:  # started here, stopped before the other one starts
                pull_twice(name, cache, prefix)
    for label, times in (("cold", cold), ("warm", warm)):
        for name, values in times.items():
            rows.setdefault(f"{label} pull by tag: median of {args.repeat} fresh caches", {})[name] = (
                f"{statistics.median(values):.2f} s"
            )


def fleet_rows(work: Path, upstream: DistributionRegistry, images: dict[str, TestImage], rules: list[dict[str, object]],
               args: argparse.Namespace, rows: dict[str, dict[str, str]], names: list[str]) -> None:  # fmt: skip
    """8 clients pulling the same cold image at once, against fresh caches."""
    image = images["multi-oci"] if args.fleet_image == "multi" else images["big"]
    with (
        PullthroughServer(work / "pullthrough-fleet", rules, workers=args.workers) as pullthrough,
        DistributionRegistry(work / "proxy-fleet", proxy_remote_url=upstream.url) as proxy,
    ):
        for name, host, prefix in zip(names, (pullthrough.host, proxy.host), (PREFIX, ""), strict=True):
            mark = upstream.mark()
            started = time.perf_counter()
            destinations = [work / f"fleet-{name[:5]}-{n}" for n in range(args.clients)]
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(skopeo_copy, [image.ref(host, prefix)] * args.clients, destinations))
            elapsed = time.perf_counter() - started
            requests, sent = summarize(upstream.requests_since(mark))
            label = f"{args.clients} concurrent cold pulls"
            rows.setdefault(f"{label}: time", {})[name] = f"{elapsed:.2f} s"
            rows.setdefault(f"{label}: upstream requests", {})[name] = str(requests)
            rows.setdefault(f"{label}: upstream bytes", {})[name] = f"{sent / 1e6:.1f} MB"


def memory_rows(work: Path, upstream: DistributionRegistry, rules: list[dict[str, object]], args: argparse.Namespace,
                rows: dict[str, dict[str, str]], names: list[str]) -> None:  # fmt: skip
    huge = make_big_blob_image(upstream.host, work / "huge", args.big_mib, "library/huge", "v1")
    # one process each, so the figure is the whole server
    with (
        PullthroughServer(work / "pullthrough-mem", rules, workers=1) as pullthrough,
        DistributionRegistry(work / "proxy-mem", proxy_remote_url=upstream.url) as proxy,
    ):
        assert pullthrough._proc is not None and proxy._proc is not None
        for name, subject in zip(
            names,
            (
                Subject("", pullthrough.host, PREFIX, pullthrough._proc.pid),
                Subject("", proxy.host, "", proxy._proc.pid),
            ),
            strict=True,
        ):
            seconds, peak = fill_big_blob(subject, huge)
            rows.setdefault(f"cold {args.big_mib} MiB blob: time", {})[name] = f"{seconds:.1f} s"
            rows.setdefault(f"cold {args.big_mib} MiB blob: peak RSS of the server", {})[name] = f"{peak:.0f} MiB"


def print_table(rows: dict[str, dict[str, str]], names: list[str], image: TestImage) -> None:
    print(
        f"\nImage: {image.repository}:{image.tag}, {image.blob_bytes / 1e6:.1f} MB in {len(image.blob_digests)} blobs\n"
    )
    print(f"| measure | {' | '.join(names)} |")
    print(f"|---|{'---|' * len(names)}")
    for label, values in rows.items():
        print(f"| {label} | {' | '.join(values.get(name, '-') for name in names)} |")


if __name__ == "__main__":
    main()
