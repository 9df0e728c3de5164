"""One real upstream registry per test session, holding the five test images; a fresh cache per test."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import Containerd, Podman, skopeo_copy, verify_dir_digests
from tests.support.images import TestImage, push_test_images
from tests.support.moto import MotoServer
from tests.support.pullthrough import PullthroughServer
from tests.support.upstream import AccessLogEntry, DistributionRegistry

PREFIX = "up"
TAG_TTL_SECONDS = 3600
IMAGES = ["single-oci", "multi-oci", "single-docker", "multi-docker", "big"]
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def upstream_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributionRegistry]:
    with DistributionRegistry(tmp_path_factory.mktemp("upstream")) as registry:
        yield registry


@pytest.fixture(scope="session")
def test_images(
    upstream_registry: DistributionRegistry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, TestImage]:
    return push_test_images(upstream_registry.host, tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


def lambda_server(
    workdir: Path, moto: MotoServer, rules: list[dict[str, object]], sync_max: int, name: str | None = None
) -> PullthroughServer:
    name = name or f"pt-{uuid.uuid4().hex[:12]}"  # a fresh table and bucket: every test starts cold
    return PullthroughServer(
        workdir, rules,
        extra_args=("--lambda", "--table", name, "--bucket", name, "--sync-fill-max-bytes", str(sync_max)),
        env={"AWS_ENDPOINT_URL": moto.url, **AWS},
    )  # fmt: skip


def cache_rules(upstream: DistributionRegistry, ttl: int = TAG_TTL_SECONDS) -> list[dict[str, object]]:
    return [{"prefix": PREFIX, "upstream": upstream.url, "tag_ttl_seconds": ttl}]


@pytest.fixture
def pullthrough(tmp_path: Path, upstream_registry: DistributionRegistry) -> Iterator[PullthroughServer]:
    with PullthroughServer(tmp_path / "pullthrough", cache_rules(upstream_registry)) as server:
        yield server


def platforms(image: TestImage) -> list[tuple[str, str | None]]:
    """(arch, variant) of every platform, e.g. [("amd64", None), ("arm64", "v8")]."""
    result = []
    for platform in image.platforms:
        _, arch, *variant = platform.split("/")
        result.append((arch, variant[0] if variant else None))
    return result


class SkopeoPuller:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pulls = 0

    def pull(self, ref: str, arch: str, variant: str | None, image: TestImage) -> None:
        self.pulls += 1
        out = self.workdir / f"pull-{self.pulls}"
        skopeo_copy(ref, out, arch=arch, variant=variant)
        got = verify_dir_digests(out)
        assert got and got <= image.blob_digests  # the blobs of the platform asked for, each verified


class PodmanPuller:
    def __init__(self, workdir: Path) -> None:
        self.podman = Podman(workdir / "podman")

    def pull(self, ref: str, arch: str, variant: str | None, image: TestImage) -> None:
        self.podman.pull(ref, arch=arch, variant=variant)
        name = ref.split("@")[0].rsplit(":", 1)[0] if "@" not in ref else ref.split("@")[0]
        assert f"{name}@{image.digest}" in self.podman.repo_digests(ref)


class CtrPuller:
    def __init__(self, containerd: Containerd) -> None:
        self.containerd = containerd

    def pull(self, ref: str, arch: str, variant: str | None, image: TestImage) -> None:
        platform = "/".join(part for part in ("linux", arch, variant) if part)
        self.containerd.pull(ref, platform=platform)
        assert self.containerd.image_digest(ref) == image.digest


@pytest.fixture(params=["skopeo", "podman", "ctr"])
def puller(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "skopeo":
        yield SkopeoPuller(tmp_path)
    elif request.param == "podman":
        yield PodmanPuller(tmp_path)
    else:
        with Containerd(tmp_path / "containerd") as containerd:
            yield CtrPuller(containerd)


def fetches(entries: list[AccessLogEntry]) -> Counter[str]:
    """How many times each manifest or blob was fetched (GET) from the upstream, by the last path segment."""
    return Counter(entry.path.rsplit("/", 1)[1] for entry in entries if entry.method == "GET" and entry.status == 200)
