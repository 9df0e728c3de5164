"""Where the upstream client may connect, and how credentials are found (Secrets Manager emulated by moto)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from adapters.upstream.addresses import AddressForbidden, AddressPolicy
from adapters.upstream.credentials import Credentials, CredentialsUnavailable, resolve_credentials


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:5000", "http://localhost", "http://169.254.169.254/latest/meta-data", "http://10.0.0.8",
     "http://172.16.0.1", "http://192.168.1.1", "http://[::1]:5000", "http://[fd00:ec2::254]", "http://0.0.0.0",
     "http://100.64.0.1", "http://224.0.0.1", "ftp://example.com", "file:///etc/passwd", "gopher://x"],
)  # fmt: skip
def test_private_loopback_metadata_and_non_http_addresses_are_refused(url: str):
    with pytest.raises(AddressForbidden):
        AddressPolicy().check(url)


def test_public_addresses_pass_and_private_ones_only_when_allowed():
    AddressPolicy().check("https://8.8.8.8/v2/")
    AddressPolicy().check("https://[2606:4700:4700::1111]/v2/")
    AddressPolicy(allow_private=True).check("http://127.0.0.1:5000")
    with pytest.raises(AddressForbidden):
        AddressPolicy(allow_private=True).check("file:///etc/passwd")


def test_a_redirect_to_the_metadata_service_is_refused_by_the_client():
    import httpx

    from adapters.upstream.client import RegistryClient
    from core.errors import Denied
    from core.rules import Rule

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"location": "http://169.254.169.254/latest/meta-data/iam"})

    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: seen.append(request) or upstream(request))
    client = RegistryClient(Rule("up", "https://8.8.8.8"), httpx.Client(transport=transport), AddressPolicy())
    with pytest.raises(Denied, match="non-public"):
        client.get_manifest("library/x", "v1")
    assert [request.url.host for request in seen] == ["8.8.8.8"]  # the metadata service was never contacted


def test_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HUB_USERNAME", "me")
    monkeypatch.setenv("HUB_PASSWORD", "s3cret")
    assert resolve_credentials("env:HUB") == Credentials("me", "s3cret")
    assert "s3cret" not in repr(resolve_credentials("env:HUB"))
    assert resolve_credentials(None) is None
    with pytest.raises(CredentialsUnavailable):
        resolve_credentials("env:MISSING")
    with pytest.raises(CredentialsUnavailable):
        resolve_credentials("vault:whatever")


def test_credentials_from_a_file(tmp_path: Path):
    secret = tmp_path / "hub.json"
    secret.write_text(json.dumps({"username": "me", "accessToken": "tok"}))
    assert resolve_credentials(f"file:{secret}") == Credentials("me", "tok")
    secret.write_text("{}")
    with pytest.raises(CredentialsUnavailable):
        resolve_credentials(f"file:{secret}")


def test_credentials_from_secrets_manager_in_ecrs_shape(monkeypatch: pytest.MonkeyPatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        arn = boto3.client("secretsmanager").create_secret(
            Name="ecr-pullthroughcache/docker-hub", SecretString=json.dumps({"username": "me", "accessToken": "tok"})
        )["ARN"]
        assert resolve_credentials(arn) == Credentials("me", "tok")
        with pytest.raises(CredentialsUnavailable):
            resolve_credentials(arn.replace("docker-hub", "nothing-here"))
