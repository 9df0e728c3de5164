"""pullthrough vs distribution 2.8 in proxy mode, side by side, against one real upstream registry.

Prints a Markdown table: pull times (skopeo, cold and warm), what reached the upstream (requests and bytes),
warm manifest requests per second (wrk, 16 connections, by tag and by digest) beside a bare FastAPI app under the
same uvicorn answering the same bytes from memory (the stack's floor), big blobs (a 1 GiB blob cold and warm, 50
clients of one cold 64 MiB blob, then of one cached) with the servers' peak memory, and per-request latency
(p50/p99) of the Lambda code path (`serve --lambda` on moto). Then the issue's targets, each as a ratio. Everything
runs on 127.0.0.1. Run by hand (`make bench`, which also runs bench_coldstart.py); about ten minutes.
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import proc
from tests.support.clients import skopeo_copy, verify_dir_digests
from tests.support.images import OCI_INDEX, OCI_MANIFEST, TestImage, make_big_blob_image, push_test_images
from tests.support.moto import MotoServer
from tests.support.ports import free_port, wait_for_http
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
    """The largest peak resident memory of the process and its children (uvicorn's workers)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return max([int(match.group(1)) / 1024, *(peak_rss_mib(int(child)) for child in children)])


class FloorApp(proc.LoopbackServer):
    """A bare FastAPI app under the same uvicorn as `serve` (httptools, uvloop, no access log), answering a manifest
    GET with the same bytes and headers from memory: the most this stack can do per request."""

    APP = """
from pathlib import Path
from fastapi import FastAPI, Response
HERE = Path(__file__).parent
MANIFEST, (MEDIA_TYPE, DIGEST) = (HERE / "manifest").read_bytes(), (HERE / "headers").read_text().split()
app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

@app.api_route("/v2/{name:path}/manifests/{reference}", methods=["GET", "HEAD"])
async def manifest(name: str, reference: str) -> Response:
    return Response(MANIFEST, media_type=MEDIA_TYPE, headers={"Docker-Content-Digest": DIGEST,
                    "Docker-Distribution-API-Version": "registry/2.0"})
"""

    def __init__(self, workdir: Path, manifest: bytes, media_type: str, digest: str, workers: int, *,
                 in_threads: bool = False) -> None:  # fmt: skip
        """`in_threads`: a plain `def` route, which Starlette runs in its thread pool."""
        self.workdir, self.workers, self.port = workdir, workers, free_port()
        app = self.APP.replace("async def", "def") if in_threads else self.APP
        self._files = {
            "floor_app.py": app.encode(),
            "manifest": manifest,
            "headers": f"{media_type} {digest}".encode(),
        }

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name, data in self._files.items():
            (self.workdir / name).write_bytes(data)
        command = [sys.executable, "-m", "uvicorn", "floor_app:app", "--app-dir", str(self.workdir), "--host",
                   "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers), "--http", "httptools",
                   "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]  # fmt: skip
        with (self.workdir / "floor.log").open("ab") as log:
            self._proc = proc.spawn(command, stdout=log, stderr=log)
        wait_for_http(f"{self.url}/v2/floor/manifests/latest", timeout=20)


def get_blob(subject: Subject, image: TestImage) -> tuple[float, float]:
    """GET the image's largest blob with curl (discarding it): (seconds, peak RSS of the server in MiB)."""
    name = "/".join(part for part in (subject.prefix, image.repository) if part)
    url = f"http://{subject.host}/v2/{name}/blobs/{image.largest_blob}"
    os.sync()  # both servers write the blob: each starts with no other write-back pending (building the image is)
    started = time.perf_counter()
    received = subprocess.run(
        ["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", url], capture_output=True, text=True, check=True
    ).stdout
    elapsed = time.perf_counter() - started
    assert image.blob_bytes - 4096 < int(received) < image.blob_bytes, received  # a layer and a small config
    return elapsed, peak_rss_mib(subject.pid)


FLOOR = "bare FastAPI, async route (floor)"
FLOOR_IN_THREADS = "bare FastAPI, def route"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="pullthrough server processes (2 cores here)")
    parser.add_argument("--big-mib", type=int, default=1024, help="size of the blob for the memory figure")
    parser.add_argument("--big-runs", type=int, default=3, help="fresh servers for the big blob's median times")
    parser.add_argument("--crowd", type=int, default=50, help="clients of one cold 64 MiB blob at once")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the fleet scenario")
    parser.add_argument("--repeat", type=int, default=9, help="fresh caches for the median pull times")
    parser.add_argument("--latency-requests", type=int, default=300, help="requests per type on serve --lambda")
    parser.add_argument("--fleet-image", choices=["big", "multi"], default="big")
    args = parser.parse_args()
    if args.big_runs < 2:
        parser.error("--big-runs: at least 2 (the second server measures the crowd of a cached blob)")

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="pullthrough-bench-"))
    rows: dict[str, dict[str, str]] = {}
    figures: dict[str, dict[str, float]] = {}
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
                    measure_rates(subject, big, upstream, args, rows, figures)
            floor_rates(work, upstream, big, args, rows, figures)
            names = [s.name for s in subjects]
            median_rows(work, upstream, big, rules, args, rows, names)
            fleet_rows(work, upstream, images, rules, args, rows, figures, names)
            memory_rows(work, upstream, rules, args, rows, figures, names)
            lambda_rows(work, upstream, big, rules, args, rows, names[0])
        print_table(rows, [*names, FLOOR, FLOOR_IN_THREADS], big)
        print_targets(figures, names, args)
        print(f"\n({time.monotonic() - started:.0f} s)")
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
                  rows: dict[str, dict[str, str]], figures: dict[str, dict[str, float]]) -> None:  # fmt: skip
    base = f"http://{subject.host}/v2/{'/'.join(p for p in (subject.prefix, image.repository) if p)}/manifests"
    for label, reference in (("by tag", image.tag), ("by digest", image.digest)):
        mark = upstream.mark()
        rate = wrk(f"{base}/{reference}", OCI_MANIFEST, args.seconds, args.connections)
        requests, _ = summarize(upstream.requests_since(mark))
        rows.setdefault(f"warm manifest req/s {label} ({args.connections} conn.)", {})[subject.name] = f"{rate:,.0f}"
        rows.setdefault(f"  upstream requests during that run ({label})", {})[subject.name] = f"{requests:,}"
        figures.setdefault(f"req/s {label}", {})[subject.name] = rate
    # The referrers of the image (none here: an empty index, cached like a tag); distribution 2.8 answers 404.
    label = f"warm referrers req/s ({args.connections} conn.)"
    referrers = f"http://{subject.host}/v2/{'/'.join(p for p in (subject.prefix, image.repository) if p)}/referrers"
    if httpx.get(f"{referrers}/{image.digest}").status_code != 200:
        rows.setdefault(label, {})[subject.name] = "404 (no referrers API)"
        return
    mark = upstream.mark()
    rate = wrk(f"{referrers}/{image.digest}", OCI_INDEX, args.seconds, args.connections)
    requests, _ = summarize(upstream.requests_since(mark))
    rows.setdefault(label, {})[subject.name] = f"{rate:,.0f} ({requests} upstream requests)"


def floor_rates(work: Path, upstream: DistributionRegistry, image: TestImage, args: argparse.Namespace,
                rows: dict[str, dict[str, str]], figures: dict[str, dict[str, float]]) -> None:  # fmt: skip
    manifest = httpx.get(f"{upstream.url}/v2/{image.repository}/manifests/{image.tag}",
                         headers={"Accept": OCI_MANIFEST}).raise_for_status()  # fmt: skip
    for name, in_threads in ((FLOOR, False), (FLOOR_IN_THREADS, True)):
        with FloorApp(
            work / f"floor-{in_threads}",
            manifest.content,
            manifest.headers["content-type"],
            manifest.headers["docker-content-digest"],
            args.workers,
            in_threads=in_threads,
        ) as floor:
            rate = wrk(f"{floor.url}/v2/{image.repository}/manifests/{image.tag}", OCI_MANIFEST, args.seconds,
                       args.connections)  # fmt: skip
        rows[f"warm manifest req/s by tag ({args.connections} conn.)"][name] = f"{rate:,.0f}"
        figures["req/s by tag"][name] = rate


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
               args: argparse.Namespace, rows: dict[str, dict[str, str]], figures: dict[str, dict[str, float]],
               names: list[str]) -> None:  # fmt: skip
    """8 clients pulling the same cold image at once, against fresh caches."""
    image = images["multi-oci"] if args.fleet_image == "multi" else images["big"]
    with (
        PullthroughServer(work / "pullthrough-fleet", rules, workers=args.workers) as pullthrough,
        DistributionRegistry(work / "proxy-fleet", proxy_remote_url=upstream.url) as proxy,
    ):
        assert pullthrough._proc is not None and proxy._proc is not None
        for name, cache, prefix in zip(names, (pullthrough, proxy), (PREFIX, ""), strict=True):
            assert cache._proc is not None
            mark = upstream.mark()
            started = time.perf_counter()
            destinations = [work / f"fleet-{name[:5]}-{n}" for n in range(args.clients)]
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(skopeo_copy, [image.ref(cache.host, prefix)] * args.clients, destinations))
            elapsed = time.perf_counter() - started
            requests, sent = summarize(upstream.requests_since(mark))
            label = f"{args.clients} concurrent cold pulls"
            rows.setdefault(f"{label}: time", {})[name] = f"{elapsed:.2f} s"
            rows.setdefault(f"{label}: upstream requests", {})[name] = str(requests)
            rows.setdefault(f"{label}: upstream bytes", {})[name] = f"{sent / 1e6:.1f} MB"
            peak = peak_rss_mib(cache._proc.pid)
            rows.setdefault(f"{label}: peak RSS of a server process", {})[name] = f"{peak:.0f} MiB"
            figures.setdefault("fleet RSS", {})[name] = peak


def memory_rows(work: Path, upstream: DistributionRegistry, rules: list[dict[str, object]], args: argparse.Namespace,
                rows: dict[str, dict[str, str]], figures: dict[str, dict[str, float]],
                names: list[str]) -> None:  # fmt: skip
    """One server process each, so that the memory figure is the whole server. Writing a GiB moves by seconds from
    one fill to the next on this machine (how fast the kernel finds memory for its page cache): medians over
    `--big-runs` fresh servers, taking turns at going first."""
    huge = make_big_blob_image(upstream.host, work / "huge", args.big_mib, "library/huge", "v1")
    crowded = make_big_blob_image(upstream.host, work / "crowded", 64, "library/crowded", "v1")
    servers = {names[0]: (lambda d: PullthroughServer(d, rules, workers=1), PREFIX),
               names[1]: (lambda d: DistributionRegistry(d, proxy_remote_url=upstream.url), "")}  # fmt: skip
    measured: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for run in range(args.big_runs):
        for name in names if run % 2 == 0 else reversed(names):
            make, prefix = servers[name]
            directory = work / f"big-{name[:5]}-{run}"
            with make(directory) as server:
                assert server._proc is not None
                subject = Subject(name, server.host, prefix, server._proc.pid)
                cold, peak = get_blob(subject, huge)
                warm, _ = get_blob(subject, huge)
                figures_of_run = {"big cold": cold, "big RSS": peak, "big warm": warm}
                if run == 0:
                    figures_of_run["crowd"] = crowd(subject, crowded, args.crowd)
                    figures_of_run["crowd RSS"] = peak_rss_mib(server._proc.pid)
                elif run == 1:  # a crowd of a cached blob: the server's peak so far is its 1 GiB GETs'
                    crowd(subject, crowded, 1)
                    figures_of_run["warm crowd"] = crowd(subject, crowded, args.crowd)
                    figures_of_run["warm crowd RSS"] = peak_rss_mib(server._proc.pid)
            shutil.rmtree(directory)
            for key, value in figures_of_run.items():
                measured[name].setdefault(key, []).append(value)
    for name in names:
        cold_runs = measured[name]["big cold"]
        rows.setdefault(f"cold {args.big_mib} MiB blob: each run", {})[name] = " / ".join(f"{v:.2f}" for v in cold_runs)
        for label, key, unit in (
            (f"cold {args.big_mib} MiB blob: median time", "big cold", "s"),
            (f"cold {args.big_mib} MiB blob: peak RSS of the server", "big RSS", "MiB"),
            (f"warm {args.big_mib} MiB blob: median time", "big warm", "s"),
            (f"{args.crowd} clients of one cold 64 MiB blob: time", "crowd", "s"),
            (f"{args.crowd} clients of one cold 64 MiB blob: peak RSS", "crowd RSS", "MiB"),
            (f"{args.crowd} clients of one cached 64 MiB blob: time", "warm crowd", "s"),
            (f"{args.crowd} clients of one cached 64 MiB blob: peak RSS", "warm crowd RSS", "MiB"),
        ):
            values = measured[name][key]
            value = max(values) if unit == "MiB" else statistics.median(values)
            rows.setdefault(label, {})[name] = f"{value:.0f} MiB" if unit == "MiB" else f"{value:.2f} s"
            figures.setdefault(key, {})[name] = value


def crowd(subject: Subject, image: TestImage, clients: int) -> float:
    """`clients` curls of one cold blob at once; seconds until the last has it all."""
    name = "/".join(part for part in (subject.prefix, image.repository) if part)
    url = f"http://{subject.host}/v2/{name}/blobs/{image.largest_blob}"
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        received = list(pool.map(lambda _: subprocess.run(
            ["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", url],
            capture_output=True, text=True, check=True).stdout, range(clients)))  # fmt: skip
    assert all(int(size) >= 64 << 20 for size in received), received
    return time.perf_counter() - started


def lambda_rows(work: Path, upstream: DistributionRegistry, image: TestImage, rules: list[dict[str, object]],
                args: argparse.Namespace, rows: dict[str, dict[str, str]], name_column: str) -> None:  # fmt: skip
    """Latency per request type through the Lambda code path (`serve --lambda`: API Gateway events into the real
    handler, S3 and DynamoDB on moto), warm, one client after another."""
    # usage totals written once a minute, as deployed (serve --lambda writes them with every request)
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "PULLTHROUGH_USAGE_FLUSH_SECONDS": "60"}  # fmt: skip
    with MotoServer(work / "moto") as moto:
        server = PullthroughServer(work / "lambda", rules, extra_args=("--lambda", "--table", "bench", "--bucket",
                                   "bench"), env={"AWS_ENDPOINT_URL": moto.url, **env})  # fmt: skip
        with server, httpx.Client(base_url=server.url, timeout=30) as client:
            name = f"{PREFIX}/{image.repository}"
            skopeo_copy(image.ref(server.host, PREFIX), work / "lambda-pull")  # everything cached
            requests = {
                "/v2/": ("/v2/", {}),
                "manifest by tag": (f"/v2/{name}/manifests/{image.tag}", {"Accept": OCI_MANIFEST}),
                "manifest by digest": (f"/v2/{name}/manifests/{image.digest}", {"Accept": OCI_MANIFEST}),
                "blob (307 to S3)": (f"/v2/{name}/blobs/{image.largest_blob}", {}),
            }
            for label, (path, headers) in requests.items():
                times = []
                for _ in range(args.latency_requests):
                    started = time.perf_counter()
                    response = client.get(path, headers=headers)
                    times.append((time.perf_counter() - started) * 1000)
                    assert response.status_code in (200, 307), (path, response.status_code)
                times.sort()
                p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
                rows.setdefault(f"serve --lambda, warm {label}: p50 / p99", {})[name_column] = (
                    f"{statistics.median(times):.1f} / {p99:.1f} ms"
                )


def print_targets(figures: dict[str, dict[str, float]], names: list[str], args: argparse.Namespace) -> None:
    """Issue 13's targets, each a ratio of two figures of this run."""
    ours, peer = names
    print("\n| target | pullthrough | beside it | ratio | goal |\n|---|---|---|---|---|")
    for label, key, other, goal, higher in (
        ("warm manifest req/s by tag vs the floor", "req/s by tag", FLOOR, 0.8, True),
        ("warm manifest req/s by tag vs a def-route floor", "req/s by tag", FLOOR_IN_THREADS, 0.8, True),
        ("warm manifest req/s by tag vs distribution", "req/s by tag", peer, 4.0, True),
        ("warm manifest req/s by digest vs distribution", "req/s by digest", peer, 1.0, True),
        (f"cold {args.big_mib} MiB blob time vs distribution", "big cold", peer, 1.1, False),
        (f"warm {args.big_mib} MiB blob time vs distribution", "big warm", peer, 1.0, False),
        (f"{args.crowd} clients of one cold blob, time vs distribution", "crowd", peer, None, False),
    ):
        mine, theirs = figures[key][ours], figures[key][other]
        ratio = mine / theirs
        met = "" if goal is None else (" (met)" if (ratio >= goal if higher else ratio <= goal) else " (missed)")
        goal_text = "-" if goal is None else f"{'≥' if higher else '≤'} {goal}x{met}"
        print(f"| {label} | {mine:,.2f} | {theirs:,.2f} ({other}) | {ratio:.2f}x | {goal_text} |")
    for label, key in (("cold big blob", "big RSS"), (f"{args.crowd} clients of one cold blob", "crowd RSS"),
                       (f"{args.crowd} clients of one cached blob", "warm crowd RSS"),
                       (f"{args.clients} concurrent cold pulls", "fleet RSS")):  # fmt: skip
        mine = figures[key][ours]
        met = "met" if mine <= 150 * 1e6 / (1 << 20) else "missed"
        print(f"| peak RSS, {label} | {mine:.0f} MiB | {figures[key][peer]:.0f} MiB ({peer}) | | ≤ 150 MB ({met}) |")


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
