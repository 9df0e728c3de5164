"""No secret reaches a log line: pull-key secrets, tokens, upstream credentials, presigned URL signatures. The
servers run with their access logs on, through logins, pulls, a refresh and failures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.e2e.conftest import PREFIX, cache_rules, lambda_server
from tests.support.clients import skopeo
from tests.support.faulty import FaultyUpstream
from tests.support.images import TestImage
from tests.support.proc import CommandError
from tests.support.pullthrough import PullthroughServer
from tests.support.pullthrough import pullthrough_cli as cli
from tests.support.upstream import DistributionRegistry

pytestmark = pytest.mark.e2e

UPSTREAM_PASSWORD = "upstream-Pa55word-never-logged"


def test_serve_logs_no_secrets(tmp_path: Path, upstream_registry: DistributionRegistry, test_images):
    image: TestImage = test_images["single-oci"]
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"puller:{bcrypt.hashpw(UPSTREAM_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    env = {"UP_USERNAME": "puller", "UP_PASSWORD": UPSTREAM_PASSWORD}
    with DistributionRegistry(tmp_path / "private", htpasswd=htpasswd) as private:
        skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds",
               f"puller:{UPSTREAM_PASSWORD}", f"docker://{image.ref(upstream_registry.host)}",
               f"docker://{private.host}/{image.repository}:{image.tag}")  # fmt: skip
        rules = [{"prefix": PREFIX, "upstream": private.url, "credentials": "env:UP", "tag_ttl_seconds": 0}]
        args = ("--auth", "token", "--access-log", "--log-level", "debug")
        with PullthroughServer(tmp_path / "cache", rules, extra_args=args, env=env) as cache:
            created = cli("keys", "create", "ci", "--prefix", PREFIX, "--data-dir", cache.data_dir)
            secret = created.stdout.strip().splitlines()[-1]
            token = httpx.get(f"{cache.url}/token", params={"scope": f"repository:{PREFIX}/{image.repository}:pull"},
                              auth=("ci", secret)).json()["token"]  # fmt: skip
            skopeo("copy", "--src-tls-verify=false", "--src-creds", f"ci:{secret}",
                   f"docker://{image.ref(cache.host, PREFIX)}", f"dir:{tmp_path / 'out'}")  # fmt: skip
            with pytest.raises(CommandError):
                skopeo("copy", "--src-tls-verify=false", "--src-creds", "ci:wrong-secret",
                       f"docker://{image.ref(cache.host, PREFIX)}", f"dir:{tmp_path / 'denied'}")  # fmt: skip
            refresh = cli("refresh", f"{PREFIX}/{image.repository}:{image.tag}", "--data-dir", cache.data_dir,
                          "--rules", cache.workdir / "rules.json", "--allow-private-upstreams", env=env)  # fmt: skip
            validate = cli("rules", "validate", PREFIX, "--data-dir", cache.data_dir, "--allow-private-upstreams",
                           env=env)  # fmt: skip
            logs = cache.log.read_text() + created.stderr + refresh.stdout + refresh.stderr + validate.stdout
    assert "GET /v2/" in logs and "unchanged" in refresh.stdout  # the logs saw the traffic
    for value in (secret, token, UPSTREAM_PASSWORD, token.split(".")[2]):
        assert value not in logs


def test_an_upstreams_presigned_redirects_are_never_logged(tmp_path: Path, upstream_registry, test_images):
    """Docker Hub sends blobs by a redirect to a presigned CDN URL; at debug level, the wire-level loggers would
    print that Location, signature and all."""
    image: TestImage = test_images["single-oci"]
    signature = "0123456789abcdef" * 4
    with FaultyUpstream(upstream_registry.url) as upstream:
        upstream.faults.signed_redirect = signature
        rules = [{"prefix": PREFIX, "upstream": upstream.url}]
        args = ("--access-log", "--log-level", "debug")
        with PullthroughServer(tmp_path / "cache", rules, extra_args=args) as cache:
            skopeo("copy", "--src-tls-verify=false", f"docker://{image.ref(cache.host, PREFIX)}",
                   f"dir:{tmp_path / 'out'}")  # fmt: skip
            logs = cache.log.read_text()
        assert upstream.count("GET", "^GET /_signed/") == len(image.blob_digests)  # the redirects were followed
    assert "GET /v2/" in logs
    assert signature not in logs


def test_the_lambda_path_logs_no_tokens_or_signatures(tmp_path: Path, moto, upstream_registry, test_images):
    image: TestImage = test_images["single-oci"]
    server = lambda_server(tmp_path / "lambda", moto, cache_rules(upstream_registry), sync_max=1 << 30)
    server.extra_args = (*server.extra_args, "--auth", "token")
    with server as cache:
        table = server.extra_args[server.extra_args.index("--table") + 1]
        created = cli("keys", "create", "ci", "--prefix", PREFIX, "--table", table, env=server.env)
        secret = created.stdout.strip().splitlines()[-1]
        skopeo("copy", "--src-tls-verify=false", "--src-creds", f"ci:{secret}",
               f"docker://{image.ref(cache.host, PREFIX)}", f"dir:{tmp_path / 'out'}")  # fmt: skip
        logs = cache.log.read_text()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert lines, "the handler logged structured lines"
    assert secret not in logs
    assert not re.search(r"X-Amz-Signature=[0-9a-f]{16}", logs)
    assert not re.search(r"Bearer [A-Za-z0-9_-]{20,}\.", logs)
