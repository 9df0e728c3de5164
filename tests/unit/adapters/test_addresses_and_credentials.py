"""Where the upstream client may connect, and how credentials are found (Secrets Manager emulated by moto)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from pullthrough_adapters.upstream.addresses import AddressForbidden, AddressPolicy, IPAddress
from pullthrough_adapters.upstream.client import default_http_client
from pullthrough_adapters.upstream.credentials import Credentials, CredentialsUnavailable, resolve_credentials


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:5000", "http://169.254.169.254/latest/meta-data", "http://10.0.0.8",
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


class _Listener:
    """A TCP listener on loopback that records whether anything connected."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]

    def connected(self) -> bool:
        try:
            self.socket.accept()[0].close()
            return True
        except TimeoutError:
            return False


@pytest.fixture
def listener() -> Iterator[_Listener]:
    server = _Listener()
    yield server
    server.socket.close()


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether names are checked before a request or at connect depends on the environment's proxies."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Host names answered from a dict, the way a DNS server under an attacker's control would answer them."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in answers[host]]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def test_a_name_is_checked_on_the_address_actually_dialled(listener: _Listener, resolver: dict[str, list[str]]):
    policy = AddressPolicy()
    resolver["rebound.example"] = ["127.0.0.1"]  # a public answer for the check, then this one: one lookup now
    policy.check(f"http://rebound.example:{listener.port}/v2/")  # names pass the pre-request check...
    with default_http_client(policy) as http, pytest.raises(AddressForbidden, match="non-public"):
        http.get(f"http://rebound.example:{listener.port}/v2/")  # ...and are refused where the socket is opened
    with default_http_client(policy) as http, pytest.raises(AddressForbidden):
        http.get(f"http://localhost:{listener.port}/v2/")
    resolver["mixed.example"] = ["8.8.8.8", "127.0.0.1"]  # one bad address is enough to refuse the name
    with default_http_client(policy) as http, pytest.raises(AddressForbidden):
        http.get(f"http://mixed.example:{listener.port}/v2/")
    assert not listener.connected()


def test_behind_an_environment_proxy_names_are_checked_before_the_request(
    resolver: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
):
    resolver["rebound.example"] = ["127.0.0.1"]
    AddressPolicy().check("https://rebound.example/v2/")  # dialled by us: checked at connect time
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")  # dialled by the proxy: checked now
    with pytest.raises(AddressForbidden, match="non-public"):
        AddressPolicy().check("https://rebound.example/v2/")
    AddressPolicy(allow_private=True).check("https://rebound.example/v2/")
    monkeypatch.setenv("NO_PROXY", "rebound.example")
    AddressPolicy().check("https://rebound.example/v2/")


def test_an_allowed_name_is_dialled_at_the_checked_address_with_its_own_host_header(resolver: dict[str, list[str]]):
    class LoopbackOnly(AddressPolicy):
        def allows(self, address: IPAddress) -> bool:
            return address.is_loopback

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    resolver["registry.example"] = ["127.0.0.1"]
    try:
        with default_http_client(LoopbackOnly()) as client:
            port = server.server_address[1]
            assert client.get(f"http://registry.example:{port}/v2/").status_code == 200
        assert seen == [f"registry.example:{port}"]
    finally:
        server.shutdown()


def test_a_redirect_to_the_metadata_service_is_refused_by_the_client():
    import httpx

    from core.errors import Denied
    from core.rules import Rule
    from pullthrough_adapters.upstream.client import RegistryClient

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
