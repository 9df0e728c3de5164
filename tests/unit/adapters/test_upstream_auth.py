from __future__ import annotations

from pullthrough_adapters.upstream.auth import TokenCache, basic_authorization, parse_challenge


def test_docker_hub_challenge():
    challenge = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'
    )
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.params["service"] == "registry.docker.io"
    assert challenge.params["scope"] == "repository:library/alpine:pull"


def test_lenient_variants():
    assert parse_challenge('Bearer realm="https://us-docker.pkg.dev/v2/token"').params == {
        "realm": "https://us-docker.pkg.dev/v2/token"
    }
    unquoted = parse_challenge('bearer realm="https://gcr.io/v2/token", service=gcr.io')
    assert unquoted is not None and unquoted.params["service"] == "gcr.io"
    basic = parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and basic.scheme == "basic"
    escaped = parse_challenge(r'Bearer realm="a\"b"')
    assert escaped is not None and escaped.realm == 'a"b'


def test_unanswerable_challenges():
    assert parse_challenge("") is None
    assert parse_challenge("Negotiate abc") is None


def test_basic_authorization():
    assert basic_authorization("user", "pa:ss") == "Basic dXNlcjpwYTpzcw=="


def test_token_cache_expires():
    cache = TokenCache()
    cache.put(("r", "s", "scope", True), "t1", expires_in=300)
    assert cache.get(("r", "s", "scope", True)) == "t1"
    cache.put(("r", "s", "scope", True), "t2", expires_in=5)  # shorter than the safety margin: never reused
    assert cache.get(("r", "s", "scope", True)) is None
