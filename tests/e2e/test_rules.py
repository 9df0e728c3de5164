"""Rules with real clients and a real upstream: containerd's mirror mode (the `ns` parameter), mapped repository
names, denied repositories, stored rules picked up by a running server, and credentials checked by `rules validate`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import bcrypt
import httpx
import pytest

from handlers.composition.local import RULES_RELOAD_SECONDS
from tests.support.clients import (
    Containerd,
    skopeo,
    skopeo_copy,
    skopeo_inspect_digest,
    verify_dir_digests,
    write_mirror_hosts,
)
from tests.support.images import TestImage
from tests.support.proc import CommandError
from tests.support.pullthrough import PullthroughServer
from tests.support.pullthrough import pullthrough_cli as cli
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e


def test_containerd_as_a_mirror_routes_by_ns(tmp_path: Path, pullthrough, upstream_registry, test_images):
    image: TestImage = test_images["multi-docker"]
    write_mirror_hosts(tmp_path / "certs.d", upstream_registry.host, pullthrough.url)
    with Containerd(tmp_path / "containerd") as containerd:
        containerd.pull(image.ref(upstream_registry.host), platform="linux/amd64", hosts_dir=tmp_path / "certs.d")
        assert containerd.image_digest(image.ref(upstream_registry.host)) == image.digest
    assert httpx.get(f"{pullthrough.url}/v2/_catalog").json() == {"repositories": [f"up/{image.repository}"]}
    answer = httpx.head(f"{pullthrough.url}/v2/{image.repository}/manifests/{image.tag}",
                        params={"ns": upstream_registry.host})  # fmt: skip
    assert answer.status_code == 200 and answer.headers["oci-namespace"] == upstream_registry.host


def test_mapped_names_and_denied_repositories(tmp_path: Path, upstream_registry, test_images):
    image: TestImage = test_images["single-oci"]
    rules = [{"prefix": "my-app", "upstream": upstream_registry.url, "upstream_repository_prefix": "library",
              "deny": ["library/big"]}]  # fmt: skip
    with PullthroughServer(tmp_path / "cache", rules) as cache:
        short = image.repository.removeprefix("library/")
        skopeo_copy(f"{cache.host}/my-app/{short}:{image.tag}", tmp_path / "mapped")
        assert verify_dir_digests(tmp_path / "mapped") == image.blob_digests
        with pytest.raises(CommandError, match=r"(?i)denied"):
            skopeo_copy(f"{cache.host}/my-app/big:v1", tmp_path / "denied")
        answer = httpx.get(f"{cache.url}/v2/my-app/big/manifests/v1")
        assert answer.status_code == 403 and answer.json()["errors"][0]["code"] == "DENIED"


def test_upstreams_on_private_addresses_are_refused_by_default(tmp_path: Path, upstream_registry, test_images):
    image = test_images["single-oci"]
    port = upstream_registry.url.rsplit(":", 1)[1]
    rules = [{"prefix": "by-address", "upstream": f"http://127.0.0.1:{port}"},
             {"prefix": "by-name", "upstream": f"http://localhost:{port}"}]  # fmt: skip
    with PullthroughServer(tmp_path / "cache", rules, allow_private_upstreams=False) as cache:
        mark = upstream_registry.mark()
        for prefix in ("by-address", "by-name"):  # the name is refused on the address it resolves to, at connect
            answer = httpx.get(f"{cache.url}/v2/{prefix}/{image.repository}/manifests/{image.tag}")
            assert answer.status_code == 403 and answer.json()["errors"][0]["code"] == "DENIED"
            assert "non-public address" in answer.json()["errors"][0]["message"]
        assert upstream_registry.requests_since(mark) == []


def test_credentials_validation_and_stored_rules(tmp_path: Path, upstream_registry, test_images):
    image: TestImage = test_images["single-oci"]
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"puller:{bcrypt.hashpw(b'right', bcrypt.gensalt(rounds=4)).decode()}\n")
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"username": "puller", "password": "right"}))
    bad.write_text(json.dumps({"username": "puller", "password": "wrong"}))
    with (
        DistributionRegistry(tmp_path / "private", htpasswd=htpasswd) as private,
        PullthroughServer(tmp_path / "cache", rules=None) as cache,  # built-in rules + the stored ones
    ):
        skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests",
               "--dest-creds", "puller:right", f"docker://{image.ref(upstream_registry.host)}",
               f"docker://{private.host}/{image.repository}:{image.tag}")  # fmt: skip
        data = ("--data-dir", cache.data_dir)
        created = cli("rules", "create", "private", "--upstream", private.url, "--credentials", f"file:{bad}",
                              *data)  # fmt: skip
        assert created.returncode == 0, created.stderr
        refused = cli("rules", "validate", "private", "--allow-private-upstreams", *data, "--output", "json")
        report = json.loads(refused.stdout)
        assert refused.returncode == 1 and report["reachable"] and report["authentication"] == "refused"
        assert "wrong" not in refused.stdout + refused.stderr  # the secret is never shown

        assert cli("rules", "update", "private", "--credentials", f"file:{good}", *data).returncode == 0
        accepted = cli("rules", "validate", "private", "--allow-private-upstreams", "--image",
                               f"{image.repository}:{image.tag}", *data, "--output", "json")  # fmt: skip
        report = json.loads(accepted.stdout)
        assert accepted.returncode == 0 and report["authentication"] == "accepted"
        assert report["sample"] == f"{image.repository}:{image.tag} -> {image.digest}"

        # the running server picks the stored rule up, and pulls with its credentials
        time.sleep(RULES_RELOAD_SECONDS + 0.5)
        assert skopeo_inspect_digest(image.ref(cache.host, "private")) == image.digest
