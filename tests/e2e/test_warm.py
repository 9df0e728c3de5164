"""`pullthrough warm` against a running cache, `serve` and the Lambda path: after it, a real client's pull costs
the upstream nothing; it fetches only the platforms asked for, goes on past an image that fails (and says why, and
exits non-zero), and logs in with a pull key in token mode."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PREFIX, cache_rules, fetches, lambda_server
from tests.support.clients import skopeo, skopeo_copy, verify_dir_digests
from tests.support.images import TestImage
from tests.support.moto import MotoServer
from tests.support.pullthrough import EXECUTABLE, PullthroughServer, pullthrough_cli
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e


def warm(cache: PullthroughServer, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`pullthrough warm` against `cache`, its output captured (so not a terminal: one line per event)."""
    command = [str(EXECUTABLE), "warm", "--registry", cache.url, *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)


def warm_on_a_terminal(cache: PullthroughServer, *args: str) -> tuple[int, str]:
    """`pullthrough warm` with its stdout on a pseudo-terminal, as a person runs it: the live display."""
    controller, terminal = pty.openpty()
    command = [str(EXECUTABLE), "warm", "--registry", cache.url, *args]
    with subprocess.Popen(command, stdout=terminal, stderr=terminal, env={**os.environ, "COLUMNS": "150"}) as done:
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            output += chunk
    os.close(controller)
    return done.returncode, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))  # colours off


def pulled_without_upstream(
    image: TestImage, cache: PullthroughServer, upstream: DistributionRegistry, out: Path, arch: str = "amd64",
    variant: str | None = None,
) -> None:  # fmt: skip
    mark = upstream.mark()
    skopeo_copy(image.ref(cache.host, PREFIX), out, arch=arch, variant=variant)
    assert verify_dir_digests(out) <= image.blob_digests
    assert upstream.requests_since(mark) == []


def test_warm_through_serve_makes_the_first_pull_a_hit(
    tmp_path: Path, pullthrough: PullthroughServer, upstream_registry: DistributionRegistry, test_images
):
    image: TestImage = test_images["big"]
    mark = upstream_registry.mark()
    status, output = warm_on_a_terminal(pullthrough, f"{PREFIX}/{image.repository}:{image.tag}")
    assert status == 0, output
    warmed = fetches(upstream_registry.requests_since(mark))
    assert set(warmed) >= image.blob_digests and set(warmed.values()) == {1}  # each blob fetched once
    assert "━" in output and "total" in output  # the bars, then the summary table and its last line
    size = f"{image.blob_bytes / 1e6:.1f} MB"
    assert f"0 bytes cached before, {size} fetched ({size} read, 0 bytes redirected to storage)" in output

    pulled_without_upstream(image, pullthrough, upstream_registry, tmp_path / "pull")

    again = warm(pullthrough, f"{PREFIX}/{image.repository}:{image.tag}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{size} cached before, 0 bytes fetched (0 bytes read, 0 bytes redirected to storage)" in again.stdout


def test_warm_through_the_lambda_path_fills_s3_and_downloads_nothing(
    tmp_path: Path, moto: MotoServer, upstream_registry: DistributionRegistry, test_images
):
    image: TestImage = test_images["big"]
    # 1 MiB: the big layer goes to the fill function, as on AWS, and the answer waits for it
    with lambda_server(tmp_path / "lambda", moto, cache_rules(upstream_registry), sync_max=1 << 20) as cache:
        s3_before = len(moto.requests())
        done = warm(cache, f"{PREFIX}/{image.repository}:{image.tag}")
        assert done.returncode == 0, done.stdout + done.stderr
        for blob in image.blob_digests:
            assert f"{blob} redirected to storage, fetched" in done.stdout
        size = f"{image.blob_bytes / 1e6:.1f} MB"
        assert f"0 bytes cached before, {size} fetched (0 bytes read, {size} redirected to storage)" in done.stdout
        s3_reads = {path.rsplit("/", 1)[1] for method, path, _ in moto.requests()[s3_before:] if method == "GET"}
        # the redirect confirms the blob is stored: none downloaded from S3 (the handler reads manifests there)
        assert not s3_reads & {blob.split(":")[1] for blob in image.blob_digests}

        pulled_without_upstream(image, cache, upstream_registry, tmp_path / "pull")
        again = warm(cache, f"{PREFIX}/{image.repository}:{image.tag}")
        assert again.returncode == 0, again.stdout + again.stderr
        for blob in image.blob_digests:
            assert f"{blob} cached before, redirected to storage" in again.stdout
        assert "0 bytes fetched" in again.stdout


def test_warm_one_platform_fetches_only_its_blobs(
    tmp_path: Path, pullthrough: PullthroughServer, upstream_registry: DistributionRegistry, test_images
):
    image: TestImage = test_images["multi-oci"]
    arm64 = _child_blobs(upstream_registry, image, "arm64")
    mark = upstream_registry.mark()
    done = warm(pullthrough, "--platform", "linux/arm64", f"{PREFIX}/{image.repository}:{image.tag}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {digest for digest in fetches(upstream_registry.requests_since(mark)) if digest in image.blob_digests} == (
        arm64
    )
    assert f"2 manifests, {len(arm64)} blobs" in done.stdout  # the index and the arm64 image

    pulled_without_upstream(image, pullthrough, upstream_registry, tmp_path / "pull", arch="arm64", variant="v8")
    missing = warm(pullthrough, "--platform", "linux/s390x", f"{PREFIX}/{image.repository}:{image.tag}")
    assert missing.returncode == 1
    assert "MANIFEST_UNKNOWN" in missing.stdout and "linux/amd64, linux/arm64/v8" in missing.stdout


def test_a_failing_image_is_reported_and_the_others_are_still_warmed(
    tmp_path: Path, pullthrough: PullthroughServer, upstream_registry: DistributionRegistry, test_images
):
    image: TestImage = test_images["single-oci"]
    image_list = tmp_path / "images.txt"
    image_list.write_text(
        f"# what the nodes run\n{PREFIX}/library/no-such-image:v1\n\n{PREFIX}/{image.repository}:nope\n"
    )
    done = warm(pullthrough, f"{PREFIX}/{image.repository}:{image.tag}", "--file", str(image_list))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    for failed in (f"{PREFIX}/library/no-such-image:v1", f"{PREFIX}/{image.repository}:nope"):
        assert f"{failed}: failed: MANIFEST_UNKNOWN (404): upstream: manifest unknown" in done.stdout
    assert lines[-1].startswith("1 of 3 images warm, 2 failed; ")

    pulled_without_upstream(image, pullthrough, upstream_registry, tmp_path / "pull")


def test_warm_with_a_pull_key_in_token_mode(
    tmp_path: Path, upstream_registry: DistributionRegistry, test_images
):  # fmt: skip
    image: TestImage = test_images["single-docker"]
    name = f"{PREFIX}/{image.repository}:{image.tag}"
    with PullthroughServer(tmp_path / "cache", cache_rules(upstream_registry), extra_args=("--auth", "token")) as cache:
        created = pullthrough_cli("keys", "create", "warmer", "--prefix", PREFIX, "--data-dir", cache.data_dir)
        secret = created.stdout.strip().splitlines()[-1]

        anonymous = warm(cache, name)
        assert anonymous.returncode == 1 and "UNAUTHORIZED (401)" in anonymous.stdout
        wrong = warm(cache, "--username", "warmer", "--password-stdin", name, stdin="not-the-secret\n")
        assert wrong.returncode == 1 and "UNAUTHORIZED (401): unknown, revoked or expired pull key" in wrong.stdout

        mark = upstream_registry.mark()
        done = warm(cache, "--username", "warmer", "--password-stdin", name, stdin=f"{secret}\n")
        assert done.returncode == 0, done.stdout + done.stderr
        assert set(fetches(upstream_registry.requests_since(mark))) >= image.blob_digests

        mark = upstream_registry.mark()
        out = tmp_path / "pull"
        skopeo("copy", "--src-tls-verify=false", "--src-creds", f"warmer:{secret}",
               f"docker://{image.ref(cache.host, PREFIX)}", f"dir:{out}")  # fmt: skip
        assert verify_dir_digests(out) == image.blob_digests
        assert upstream_registry.requests_since(mark) == []


def _child_blobs(upstream: DistributionRegistry, image: TestImage, architecture: str) -> set[str]:
    """The config and layers of one platform of a multi-platform image, read from the upstream itself."""
    accept = {"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"}
    base = f"{upstream.url}/v2/{image.repository}/manifests"
    index = httpx.get(f"{base}/{image.tag}", headers=accept).json()
    child = next(entry for entry in index["manifests"] if entry["platform"]["architecture"] == architecture)
    manifest = json.loads(httpx.get(f"{base}/{child['digest']}", headers=accept).content)
    return {manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
