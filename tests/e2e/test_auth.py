"""The token mode with real clients, through `pullthrough serve` and through the Lambda path: anonymous pulls are
refused, a pull key works with skopeo, podman and ctr, a key for one prefix cannot pull another, a revoked key
stops working."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import AWS, PREFIX, cache_rules
from tests.support.clients import Containerd, Podman, skopeo, verify_dir_digests
from tests.support.images import TestImage
from tests.support.moto import MotoServer
from tests.support.proc import CommandError
from tests.support.pullthrough import PullthroughServer, pullthrough_cli
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e


class Deployment:
    """A cache in token mode and the `pullthrough keys` arguments that manage its keys."""

    def __init__(self, server: PullthroughServer, key_args: list[str], env: dict[str, str]) -> None:
        self.server, self.key_args, self.env = server, key_args, env

    def keys(self, *args: str) -> str:
        done = pullthrough_cli("keys", *args, *self.key_args, env=self.env)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


@pytest.fixture(params=["serve", "lambda"])
def deployment(
    request, tmp_path: Path, upstream_registry: DistributionRegistry, moto: MotoServer
) -> Iterator[Deployment]:
    rules = cache_rules(upstream_registry)
    if request.param == "serve":
        with PullthroughServer(tmp_path / "cache", rules, extra_args=("--auth", "token")) as server:
            yield Deployment(server, ["--data-dir", str(server.data_dir)], {})
    else:
        name = f"auth-{tmp_path.name[-20:].lower().replace('_', '-')}"
        env = {**AWS, "AWS_ENDPOINT_URL": moto.url}
        args = ("--lambda", "--auth", "token", "--table", name, "--bucket", name)
        with PullthroughServer(tmp_path / "lambda", rules, extra_args=args, env=env) as server:
            yield Deployment(server, ["--table", name], env)


def pull(image: TestImage, host: str, out: Path, creds: str | None = None) -> set[str]:
    login = ["--src-creds", creds] if creds else []
    skopeo("copy", "--src-tls-verify=false", *login, f"docker://{image.ref(host, PREFIX)}", f"dir:{out}")
    return verify_dir_digests(out)


def test_pull_keys_with_real_clients(deployment: Deployment, test_images, tmp_path: Path):
    image: TestImage = test_images["single-oci"]
    host = deployment.server.host

    ping = httpx.get(f"{deployment.server.url}/v2/")
    assert ping.status_code == 401 and ping.headers["www-authenticate"].startswith('Bearer realm="http://')
    with pytest.raises(CommandError, match=r"(?i)unauthorized|authentication required"):
        pull(image, host, tmp_path / "anonymous")

    secret = deployment.keys("create", "ci", "--prefix", PREFIX)
    other = deployment.keys("create", "elsewhere", "--prefix", "quay")
    assert pull(image, host, tmp_path / "skopeo", f"ci:{secret}") == image.blob_digests

    podman = Podman(tmp_path / "podman")
    with pytest.raises(CommandError, match=r"(?i)unauthorized|authentication required"):
        podman.podman("pull", "--tls-verify=false", image.ref(host, PREFIX))
    podman.podman("pull", "--tls-verify=false", "--creds", f"ci:{secret}", image.ref(host, PREFIX))
    assert image.digest in " ".join(podman.repo_digests(image.ref(host, PREFIX)))
    with Containerd(tmp_path / "containerd") as containerd:
        containerd.ctr("images", "pull", "--plain-http", "--snapshotter", "native", "--user", f"ci:{secret}",
                       image.ref(host, PREFIX))  # fmt: skip
        assert containerd.image_digest(image.ref(host, PREFIX)) == image.digest

    with pytest.raises(CommandError, match=r"(?i)denied"):
        pull(image, host, tmp_path / "other-prefix", f"elsewhere:{other}")
    with pytest.raises(CommandError, match=r"(?i)unauthorized|authentication required"):
        pull(image, host, tmp_path / "wrong-secret", "ci:not-the-secret")

    deployment.keys("revoke", "ci")
    with pytest.raises(CommandError, match=r"(?i)unauthorized|authentication required"):
        pull(image, host, tmp_path / "revoked", f"ci:{secret}")
