"""`sam local`: the functions as `sam build` packages them, run by SAM in Lambda-like containers, with podman as the
engine and a base image built offline (tests/support/lambda_image.py). `sam local invoke` runs the sample events of
events/; skopeo pulls real images through `sam local start-api`.

S3 and DynamoDB are moto in server mode, and the upstream is a real registry, both listening on the host's address on
podman's bridge: a container's 127.0.0.1 is its own. The blob redirects name that address too, and the host reaches
it, so skopeo gets the bytes from moto as a client gets them from S3.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import AWS, PREFIX, cache_rules, fetches, lambda_server
from tests.support import proc
from tests.support.clients import skopeo_copy, verify_dir_digests
from tests.support.images import TestImage, push_test_images
from tests.support.lambda_image import CACHE_DIR, LAMBDA_ARCHITECTURE, SAM_BIN, PodmanEngine, base_image, bridge_address
from tests.support.moto import MotoServer
from tests.support.ports import free_port, wait_for_http
from tests.support.upstream import DistributionRegistry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
# (image, arch, variant) pulled through start-api: an OCI image, and one platform of a Docker manifest list.
PULLS = [("single-oci", "amd64", None), ("multi-docker", "arm64", "v8")]


class OnBridge:
    """A server of the tests' own, named by the host's address on podman's bridge instead of 127.0.0.1."""

    address: str
    port: int

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"


class RegistryOnBridge(OnBridge, DistributionRegistry):
    def __init__(self, workdir: Path, address: str) -> None:
        super().__init__(workdir)
        self.address = address


class MotoOnBridge(OnBridge, MotoServer):
    def __init__(self, workdir: Path, address: str) -> None:
        super().__init__(workdir)
        self.address = address

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [Path(sys.executable).parent / "moto_server", "-H", self.address, "-p", str(self.port)]
        with self.log.open("ab") as log:
            self._proc = proc.spawn(command, stdout=log, stderr=log)
        wait_for_http(f"{self.url}/moto-api/", timeout=30)


class Sam:
    """The SAM CLI of `make sam-tools`, on the podman engine, with the local run's template, settings and image."""

    def __init__(self, engine: PodmanEngine, image: str, template: Path, env_vars: Path) -> None:
        # SAM asks STS for the account id, and retries for seconds when there is no AWS to answer: ask once.
        self.env = {"DOCKER_HOST": engine.docker_host, "SAM_CLI_TELEMETRY": "0", "AWS_MAX_ATTEMPTS": "1", **AWS}
        self.options = [
            "--template-file", template, "--env-vars", env_vars, "--parameter-overrides",
            f"Architecture={LAMBDA_ARCHITECTURE}",
            # no registry is reachable: never pull, run on the image built here
            "--invoke-image", image, "--skip-pull-image",
        ]  # fmt: skip

    def invoke(self, function: str, event: str) -> dict[str, Any]:
        """`sam local invoke`: the function's result (stdout; the function's logs go to stderr)."""
        command = [SAM_BIN / "sam", "local", "invoke", function, "--event", EVENTS / event, *self.options]
        result: dict[str, Any] = json.loads(proc.run(command, env=self.env, timeout=180))
        return result


class SamApi(proc.LoopbackServer):
    """`sam local start-api` on 127.0.0.1, one warm container per function, started by its first request."""

    def __init__(self, sam: Sam, log: Path) -> None:
        self.sam = sam
        self.port = free_port()
        self.log = log

    def start(self, timeout: float = 60.0) -> None:
        command = [SAM_BIN / "sam", "local", "start-api", "--host", "127.0.0.1", "--port", str(self.port),
                   "--warm-containers", "LAZY", *self.sam.options]  # fmt: skip
        with self.log.open("ab") as log:
            self._proc = proc.spawn(command, stdout=log, stderr=log, env=self.sam.env)
        # Wait for the listener, not for an answer: any request would start a function.
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sam local start-api did not start:\n{self.log.read_text()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def engine() -> Iterator[PodmanEngine]:
    if not (SAM_BIN / "sam").exists():
        pytest.fail("SAM CLI is missing: `make sam-tools` installs it into .venv-sam")
    with PodmanEngine() as engine:
        yield engine


@pytest.fixture(scope="module")
def image(engine: PodmanEngine) -> str:
    return base_image(engine, SAM_BIN / "python3.12")


@pytest.fixture(scope="module")
def bridge(engine: PodmanEngine, image: str) -> str:
    return bridge_address(engine, image)


@pytest.fixture(scope="module")
def upstream(bridge: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryOnBridge]:
    with RegistryOnBridge(tmp_path_factory.mktemp("upstream"), bridge) as registry:
        yield registry


@pytest.fixture(scope="module")
def images(upstream: RegistryOnBridge, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestImage]:
    return push_test_images(upstream.host, tmp_path_factory.mktemp("images"), big_layer_mib=1)


@pytest.fixture(scope="module")
def moto(bridge: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoOnBridge]:
    with MotoOnBridge(tmp_path_factory.mktemp("moto"), bridge) as server:
        yield server


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make lambda-build` for this machine's processor, as a user runs it before `sam local`."""
    build = tmp_path_factory.mktemp("sam-build")
    command = [SAM_BIN / "sam", "build", "--template-file", ROOT / "template.yaml", "--build-dir", build,
               "--cache-dir", CACHE_DIR / "sam-build-cache", "--parameter-overrides",
               f"Architecture={LAMBDA_ARCHITECTURE}"]  # fmt: skip
    proc.run(command, env={"SAM_CLI_TELEMETRY": "0", "PATH": f"{SAM_BIN}:{os.environ['PATH']}"}, timeout=600)
    # the rest of `make lambda-build`: the functions run from the bytecode a deployment ships
    proc.run(["make", "--no-print-directory", "-C", ROOT, "lambda-bytecode", f"LAMBDA_BUILD_DIR={build}"], timeout=300)
    built = yaml.safe_load((build / "template.yaml").read_text())
    # The upstream is on the bridge, a private address, which the cache refuses unless told otherwise. Nothing
    # deployed needs that switch, so the template leaves it out, and SAM passes on only the variables it declares.
    built["Globals"]["Function"]["Environment"]["Variables"]["PULLTHROUGH_ALLOW_PRIVATE_UPSTREAMS"] = ""
    local = build / "template-private-upstreams.json"  # beside the built code, which its CodeUri paths name
    local.write_text(json.dumps(built))
    return local


@pytest.fixture
def sam(
    tmp_path: Path, engine: PodmanEngine, image: str, template: Path, moto: MotoOnBridge, upstream: RegistryOnBridge
) -> Sam:
    """A cold cache: a new table and bucket, holding one rule that leads to the upstream, whose tags go stale in a
    second (so that the refresh has work, and a second pull asks the upstream about the tag again)."""
    name = f"pt-{uuid.uuid4().hex[:12]}"
    with lambda_server(tmp_path / "setup", moto, cache_rules(upstream, ttl=1), sync_max=64 << 20, name=name):
        pass  # `serve --lambda` creates the table and bucket and stores the rules, as the template and a user would
    variables = {
        "AWS_ENDPOINT_URL": moto.url,
        "PULLTHROUGH_TABLE_NAME": name,
        "PULLTHROUGH_BUCKET_NAME": name,
        "PULLTHROUGH_BUILTIN_RULES": "",
        "PULLTHROUGH_AUTH": "none",
        "PULLTHROUGH_ALLOW_PRIVATE_UPSTREAMS": "1",
    }
    env_vars = tmp_path / "env.json"
    env_vars.write_text(json.dumps({"Parameters": variables}))  # "Parameters": for every function
    return Sam(engine, image, template, env_vars)


def test_sam_validate_lint_passes():
    """SAM's own check (the translator and cfn-lint as SAM CLI pins them), as a user runs it before a deploy."""
    env = {"SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1", "PATH": f"{SAM_BIN}:{os.environ['PATH']}"}
    output = proc.run([SAM_BIN / "sam", "validate", "--lint", "--template-file", ROOT / "template.yaml"], env=env)
    assert b"is a valid SAM Template" in output


def test_sam_local_invoke_runs_the_sample_events(sam: Sam, upstream: RegistryOnBridge, images: dict[str, TestImage]):
    image = images["single-oci"]  # what events/api-manifest-get.json asks for
    mark = upstream.mark()
    response = sam.invoke("ApiFunction", "api-manifest-get.json")
    assert response["statusCode"] == 200, response
    assert response["headers"]["docker-content-digest"] == image.digest
    assert fetches(upstream.requests_since(mark)) == Counter({image.tag: 1})

    # The scheduled refresh finds the tag just pulled stale and asks the upstream again.
    mark = upstream.mark()
    assert sam.invoke("RefreshFunction", "scheduled-refresh.json") == {
        "revalidated": 1, "unchanged": 1, "updated": 0, "deferred": 0, "failed": 0
    }  # fmt: skip
    assert [entry.method for entry in upstream.requests_since(mark)] == ["HEAD"]


def test_skopeo_pulls_through_sam_local_start_api(
    sam: Sam, tmp_path: Path, upstream: RegistryOnBridge, moto: MotoOnBridge, images: dict[str, TestImage]
):
    with SamApi(sam, tmp_path / "start-api.log") as api:
        for key, arch, variant in PULLS:
            image = images[key]
            mark, s3_mark = upstream.mark(), len(moto.requests())
            out = tmp_path / f"{key}-cold"
            skopeo_copy(image.ref(api.host, PREFIX), out, arch=arch, variant=variant)
            blobs = verify_dir_digests(out)
            assert blobs and blobs <= image.blob_digests
            cold = fetches(upstream.requests_since(mark))
            assert set(cold) >= blobs and all(count == 1 for count in cold.values()), cold
            # the bytes came from S3 (moto), through the 307, not through the function
            from_s3 = {path.rsplit("/", 1)[1] for method, path, status in moto.requests()[s3_mark:]
                       if method == "GET" and status == 200 and "/blobs/sha256/" in path}  # fmt: skip
            assert {blob.split(":")[1] for blob in blobs} <= from_s3

            mark = upstream.mark()
            skopeo_copy(image.ref(api.host, PREFIX), tmp_path / f"{key}-warm", arch=arch, variant=variant)
            assert verify_dir_digests(tmp_path / f"{key}-warm") == blobs
            assert all(entry.method == "HEAD" for entry in upstream.requests_since(mark))  # only the tag, asked again
