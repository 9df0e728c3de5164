"""Lifecycle with real clients: `pullthrough gc`, the server's own background sweep and the size cap forget what
nobody pulls, keep what is shared, pulled or pinned, and never break a pull; a forgotten image fills again."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from core.digest import Digest
from tests.e2e.conftest import AWS, PREFIX, fetches, lambda_server, platforms
from tests.support.clients import skopeo_copy, skopeo_inspect_raw, verify_dir_digests
from tests.support.images import TestImage, make_big_blob_image, push_sibling_images
from tests.support.moto import MotoServer
from tests.support.pullthrough import PullthroughServer, pullthrough_cli
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e

# seconds: long enough for a slow machine to pull everything, then run three `gc`s (2 s each here), inside it
EXPIRE = 8


@pytest.fixture(scope="module")
def siblings(upstream_registry: DistributionRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestImage]:
    """lifecycle/kept, /stale, /pinned: one base layer shared, a config and a top layer each."""
    return push_sibling_images(upstream_registry.host, tmp_path_factory.mktemp("siblings"), "lifecycle",
                               ["kept", "stale", "pinned"])  # fmt: skip


def expiring_rules(upstream: DistributionRegistry, expire: str = f"{EXPIRE}s") -> list[dict[str, object]]:
    return [{"prefix": PREFIX, "upstream": upstream.url, "tag_ttl_seconds": 3600, "expire_unpulled": expire,
             "keep": ["lifecycle/pinned"]}]  # fmt: skip


class Pulls:
    """skopeo pulls into numbered directories, every blob checked against its digest."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.count = 0

    def pull(self, cache: PullthroughServer, image: TestImage) -> None:
        for arch, variant in platforms(image):
            self.count += 1
            out = self.workdir / f"pull-{self.count}"
            skopeo_copy(image.ref(cache.host, PREFIX), out, arch=arch, variant=variant)
            got = verify_dir_digests(out)
            assert got and got <= image.blob_digests, (image.key, got - image.blob_digests)


def stored_digests(cache: PullthroughServer) -> set[str]:
    return {f"sha256:{path.name}" for path in (cache.data_dir / "blobs" / "sha256").glob("*/*") if path.is_file()}


def stored_bytes(cache: PullthroughServer) -> int:
    return sum(path.stat().st_size for path in (cache.data_dir / "blobs" / "sha256").glob("*/*") if path.is_file())


def gc(cache: PullthroughServer, *args: str) -> str:
    done = pullthrough_cli("gc", "--data-dir", cache.data_dir, "--rules", cache.workdir / "rules.json", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def own(image: TestImage, base: str) -> set[str]:
    """What an image holds that its siblings do not: its manifest, config and top layer."""
    return {image.digest, *image.blob_digests} - {base}


def test_gc_forgets_what_nobody_pulled_and_keeps_what_is_shared_pulled_or_pinned(
    tmp_path: Path, upstream_registry: DistributionRegistry, siblings, test_images
):
    kept, stale, pinned = siblings["kept"], siblings["stale"], siblings["pinned"]
    multi: TestImage = test_images["multi-oci"]
    (base,) = kept.blob_digests & stale.blob_digests
    pulls = Pulls(tmp_path)
    with PullthroughServer(tmp_path / "cache", expiring_rules(upstream_registry)) as cache:
        for image in (kept, stale, pinned, multi):
            pulls.pull(cache, image)
        time.sleep(EXPIRE + 1)  # past expire_unpulled and the tenth of it a last pull may be recorded late
        pulls.pull(cache, kept)
        skopeo_inspect_raw(multi.ref(cache.host, PREFIX))  # only the index, by tag: its children stay with it
        everything = stored_digests(cache)
        assert own(stale, base) | {base} | multi.manifest_digests | multi.blob_digests <= everything

        dry = gc(cache, "--dry-run", "--grace", "0s")
        assert re.findall(r"^would forget\t(\S+)\t(\S+)$", dry, re.M) == [
            (f"{PREFIX}/lifecycle/stale:v1", stale.digest)
        ]
        assert stored_digests(cache) == everything  # a dry run changes nothing
        assert re.findall(r"^would forget", gc(cache, "--dry-run"), re.M)  # and forgot nothing either

        report = gc(cache, "--grace", "0s")
        assert re.findall(r"^forgot\t(\S+)\t(\S+)$", report, re.M) == [(f"{PREFIX}/lifecycle/stale:v1", stale.digest)]
        assert "deleted 3 past their grace" in report  # stale's manifest, config and top layer
        assert stored_digests(cache) == everything - own(stale, base)  # the shared base layer stays

        mark = upstream_registry.mark()
        for image in (kept, pinned, multi):
            pulls.pull(cache, image)
        assert upstream_registry.requests_since(mark) == []  # what stayed is whole: nothing from the upstream

        mark = upstream_registry.mark()
        pulls.pull(cache, stale)  # the forgotten image fills again, correctly: its own blobs, once each
        fetched = fetches(upstream_registry.requests_since(mark))
        assert stale.blob_digests - {base} <= set(fetched) and base not in fetched, fetched
        assert all(count == 1 for count in fetched.values()), fetched
        assert own(stale, base) <= stored_digests(cache)


def test_the_server_sweeps_in_the_background_and_no_pull_breaks(
    tmp_path: Path, upstream_registry: DistributionRegistry, siblings, test_images
):
    """A sweep every second, images expiring a second after their last pull, bytes deleted a second later: eight
    clients pulling over and over all get whole, verified images, filled again whenever they were forgotten."""
    images = [*siblings.values(), *(test_images[key] for key in ("single-oci", "single-docker", "multi-oci"))]
    args = ("--gc-interval", "1s", "--gc-grace", "1s")
    with PullthroughServer(tmp_path / "cache", expiring_rules(upstream_registry, "1s"), extra_args=args) as cache:
        pulls = [Pulls(tmp_path / f"client-{n}") for n in range(8)]
        refilled = []
        for _ in range(3):
            mark = upstream_registry.mark()
            with ThreadPoolExecutor(8) as pool:
                done = [pool.submit(pulls[n].pull, cache, images[n % len(images)]) for n in range(8)]
                for future in done:
                    future.result()
            refilled.append(len(fetches(upstream_registry.requests_since(mark))))
            time.sleep(2.5)  # long enough for a sweep to forget them all, and delete their bytes
        log = cache.log.read_text()
    assert all(refilled), refilled  # every round found the previous one's images forgotten, and filled them again
    sweeps = [line for line in log.splitlines() if "lifecycle: {" in line]
    assert sweeps and any("'deleted': 0" not in line for line in sweeps), log[-3000:]
    assert "Traceback" not in log and "lifecycle: the background round failed" not in log


def test_the_size_cap_evicts_the_least_recently_pulled_never_the_pinned(
    tmp_path: Path, upstream_registry: DistributionRegistry, tmp_path_factory: pytest.TempPathFactory
):
    workdir = tmp_path_factory.mktemp("capped")
    pinned = make_big_blob_image(upstream_registry.host, workdir, 4, "lifecycle/pinned-big", "v1")
    images = [make_big_blob_image(upstream_registry.host, workdir, 4, f"capped/image-{n}", "v1") for n in range(4)]
    rules = [{"prefix": PREFIX, "upstream": upstream_registry.url, "keep": ["lifecycle/pinned-*"]}]
    cap = 14 << 20  # room for three of the five 4 MiB images
    args = ("--max-cache-size", str(cap), "--gc-grace", "0s", "--gc-interval", "1s")
    pulls = Pulls(tmp_path)
    with PullthroughServer(tmp_path / "cache", rules, extra_args=args) as cache:
        for image in (pinned, *images):  # the pinned one is the least recently pulled of all
            pulls.pull(cache, image)
        deadline = time.monotonic() + 30
        while stored_bytes(cache) > cap and time.monotonic() < deadline:
            time.sleep(0.25)
        assert stored_bytes(cache) <= cap
        stored = stored_digests(cache)
        assert {pinned.largest_blob, images[2].largest_blob, images[3].largest_blob} <= stored
        assert not {images[0].largest_blob, images[1].largest_blob} & stored  # the two least recently pulled

        mark = upstream_registry.mark()
        for image in (pinned, images[3]):
            pulls.pull(cache, image)
        assert upstream_registry.requests_since(mark) == []
        pulls.pull(cache, images[0])  # evicted: filled again
        assert images[0].largest_blob in stored_digests(cache)


@pytest.fixture
def deployment(tmp_path: Path, moto: MotoServer, upstream_registry: DistributionRegistry) -> Iterator[
    tuple[PullthroughServer, str]
]:  # fmt: skip
    name = f"gc-{Digest.of(str(tmp_path).encode()).encoded[:12]}"
    with lambda_server(tmp_path / "lambda", moto, expiring_rules(upstream_registry), 256 << 20, name) as server:
        yield server, name


def test_gc_on_a_deployment_keeps_a_url_handed_out_before_working_for_the_grace(
    tmp_path: Path, moto: MotoServer, deployment, siblings
):
    cache, name = deployment
    stale = siblings["stale"]
    (base,) = siblings["kept"].blob_digests & stale.blob_digests
    top = min(stale.blob_digests - {base})  # its config or its top layer
    Pulls(tmp_path / "first").pull(cache, stale)
    answer = httpx.get(f"{cache.url}/v2/{PREFIX}/{stale.repository}/blobs/{top}")
    assert answer.status_code == 307
    handed_out = answer.headers["location"]  # a client got this URL just before the sweep
    time.sleep(EXPIRE + 1)  # past expire_unpulled and the tenth of it a last pull may be recorded late

    env = {"AWS_ENDPOINT_URL": moto.url, **AWS}
    swept = pullthrough_cli("gc", "--table", name, "--bucket", name, env=env)  # the deployment's grace: 2 h
    assert swept.returncode == 0, swept.stderr
    assert f"forgot\t{PREFIX}/lifecycle/stale:v1\t{stale.digest}" in swept.stdout
    assert "deleted 0 past their grace" in swept.stdout
    late = httpx.get(handed_out)
    assert late.status_code == 200 and str(Digest.of(late.content)) == top  # within the grace: still served

    deleted = pullthrough_cli("gc", "--table", name, "--bucket", name, "--grace", "0s", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted 4 past their grace" in deleted.stdout  # all of it: nothing else here shares its base layer
    assert httpx.get(handed_out).status_code == 404  # the bytes are gone from the bucket

    Pulls(tmp_path / "again").pull(cache, stale)  # and the image fills again through the Lambda path
