"""The lifecycle sweep at scale: a cache of --tags tags (5 blobs of their own each, one base layer per repository),
half of them unpulled past expire_unpulled, swept on SQLite (files) and on DynamoDB + S3 (moto, in process).

For each backend: a dry run (its peak Python memory, traced), the real sweep (what it forgets and deletes, how
long it takes, how many store calls it makes) and a second sweep with nothing left to do (the steady cost of a
scheduled run). moto answers in microseconds where DynamoDB takes milliseconds: read the call counts for AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.digest import Digest
from core.lifecycle import Lifecycler, SweepReport
from core.mediatypes import OCI_MANIFEST
from core.ports import BlobStore, ManifestRecord, TagRecord
from core.rules import Rule, RuleSet

DAY = 86400
TAGS_PER_REPOSITORY = 20
OWN_BLOBS = 5  # a config and four layers


class Counted:
    """Counts the calls made through it, by method name."""

    def __init__(self, inner: Any, calls: Counter[str]) -> None:
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] += 1
            return value(*args, **kwargs)

        return counted


def populate(metadata: Any, blobs: BlobStore, tags: int, now: float) -> None:
    repositories = max(1, tags // TAGS_PER_REPOSITORY)
    for r in range(repositories):
        repository = f"bench/repo-{r}"
        base = Digest.of(f"base {r}".encode())
        metadata.put_blob("up", repository, base, 1 << 20)
        for t in range(TAGS_PER_REPOSITORY):
            own = [Digest.of(f"{repository}:{t} blob {i}".encode()) for i in range(OWN_BLOBS)]
            for digest in own:
                metadata.put_blob("up", repository, digest, 100_000)
            document = {
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(own[0]),
                           "size": 100_000},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": str(digest),
                            "size": 100_000} for digest in (base, *own[1:])],
            }  # fmt: skip
            data = json.dumps(document).encode()
            digest = Digest.of(data)
            writer = blobs.writer(digest)
            writer.write(data)
            writer.commit()
            record = ManifestRecord(digest, OCI_MANIFEST, len(data))
            metadata.put_manifest("up", repository, record)
            pulled = now - (30 * DAY if t % 2 else DAY)  # every other tag unpulled for a month
            metadata.put_tag("up", repository, f"v{t}", TagRecord(record, checked_at=pulled, pulled_at=pulled))


def measure(name: str, metadata: Any, blobs: BlobStore, tags: int, api_calls: Callable[[], int]) -> list[str]:
    rules = RuleSet([Rule("up", "https://registry.invalid", expire_unpulled=7 * DAY)])
    started = time.perf_counter()
    populate(metadata, blobs, tags, time.time())
    populated = time.perf_counter() - started
    rows = []
    calls: Counter[str] = Counter()
    reads: Counter[str] = Counter()
    store, blob_store = Counted(metadata, calls), Counted(blobs, reads)

    def run(label: str, *, dry_run: bool, trace: bool = False) -> None:
        calls.clear()
        reads.clear()
        before = api_calls()
        lifecycler = Lifecycler(rules, store, blob_store, grace_seconds=0, dry_run=dry_run)
        if trace:
            tracemalloc.start()
        begin = time.perf_counter()
        report: SweepReport = lifecycler.sweep()
        elapsed = time.perf_counter() - begin
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        tracemalloc.stop()
        rows.append(
            f"| {name} | {tags:,} | {label} | {elapsed:.1f} s{' (traced)' if trace else ''} | "
            f"{f'{peak / 2**20:.1f} MiB' if trace else '-'} | {report.tags_forgotten:,} / "
            f"{report.manifests_forgotten + report.blobs_forgotten:,} | {report.deleted:,} | "
            f"{sum(calls.values()):,} | {reads['read']:,} | {api_calls() - before:,} |"
        )

    run("dry run", dry_run=True, trace=True)
    run("sweep", dry_run=False)
    run("again (nothing to do)", dry_run=False)
    print(f"{name}: populated {tags:,} tags in {populated:.0f} s", file=sys.stderr)
    return rows


def sqlite_rows(tags: int) -> list[str]:
    from pullthrough_adapters.local.blob_store import FileBlobStore
    from pullthrough_adapters.local.metadata_store import SqliteMetadataStore

    root = Path(tempfile.mkdtemp(prefix="pullthrough-bench-lifecycle-"))
    (root / "blobs").mkdir()
    return measure("SQLite + files", SqliteMetadataStore(root / "metadata.db"), FileBlobStore(root), tags, lambda: 0)


def dynamodb_rows(tags: int) -> list[str]:
    from tests.support.moto import MotoServer

    from handlers.composition.aws import blob_store, clients_for, ensure_resources, table_store
    from handlers.settings import AwsSettings

    os.environ.update({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"})
    with MotoServer(Path(tempfile.mkdtemp(prefix="pullthrough-bench-moto-"))) as moto:  # its memory is not ours
        os.environ["AWS_ENDPOINT_URL"] = moto.url
        clients_for.cache_clear()
        settings = AwsSettings(table="bench", bucket="bench", endpoint_url=moto.url)
        ensure_resources(settings)
        clients = clients_for(settings)
        made: Counter[str] = Counter()
        for client in (clients.dynamodb, clients.s3):
            client.meta.events.register("before-call.*.*", lambda model, **_: made.update([model.name]))
        return measure("DynamoDB + S3 (moto server)", table_store(settings), blob_store(settings), tags,
                       lambda: sum(made.values()))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--dynamodb-tags", type=int, default=1_000, help="moto slows down as its table grows")
    parser.add_argument("--backend", choices=["sqlite", "dynamodb", "both"], default="both")
    args = parser.parse_args()
    rows = []
    if args.backend in ("sqlite", "both"):
        rows += sqlite_rows(args.tags)
    if args.backend in ("dynamodb", "both"):
        rows += dynamodb_rows(args.dynamodb_tags)
    print(f"\nLifecycle sweep: {TAGS_PER_REPOSITORY} tags per repository, {OWN_BLOBS + 0.05:g} blob records per "
          f"tag, half unpulled past expire_unpulled (python {sys.version.split()[0]}, this machine)\n")  # fmt: skip
    print("| backend | tags | run | time | peak memory | forgot tags / records | bytes deleted (digests) | "
          "store calls | manifests read | AWS API calls |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
