"""Pull keys and tokens: who gets a token, what it allows, and which tokens are refused."""

from __future__ import annotations

import base64
import json

import pytest

from core.auth import (
    Authenticator,
    PullKey,
    SigningKey,
    TokenService,
    hash_secret,
    requested_repositories,
    secret_matches,
)
from core.errors import Denied, Unauthorized


class Keys:
    def __init__(self, *keys: PullKey) -> None:
        self.keys = {key.name: key for key in keys}

    def get_key(self, name: str) -> PullKey | None:
        return self.keys.get(name)


def basic(name: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()


@pytest.fixture
def now() -> list[float]:
    return [1_800_000_000.0]


@pytest.fixture
def signing() -> list[SigningKey]:
    return [SigningKey("k1", b"s" * 32)]


@pytest.fixture
def auth(now, signing) -> Authenticator:
    keys = Keys(
        PullKey("ci", ("docker-hub", "ghcr/org"), hash_secret("right"), 0.0),
        PullKey("all", ("",), hash_secret("everything"), 0.0),
        PullKey("old", ("docker-hub",), hash_secret("x"), 0.0, expires_at=now[0] - 1),
        PullKey("gone", ("docker-hub",), hash_secret("y"), 0.0, revoked=True),
    )
    return Authenticator(keys, TokenService(lambda: signing, "pullthrough", clock=lambda: now[0]), clock=lambda: now[0])


def bearer(answer: dict[str, object]) -> str:
    assert answer["token"] == answer["access_token"] and answer["expires_in"] == 300
    return f"Bearer {answer['token']}"


def test_secrets_are_hashed_with_a_salt_and_verified():
    first, second = hash_secret("s3cret"), hash_secret("s3cret")
    assert first != second and first.startswith("scrypt$") and "s3cret" not in first
    assert secret_matches("s3cret", first) and not secret_matches("s3cret!", first)
    assert not secret_matches("s3cret", "garbage")
    salt = first.split("$")[1]
    for corrupt in (f"scrypt${salt}$not*base64", f"md5${salt}${first.split('$')[2]}", "scrypt$!!$AAAA"):
        assert not secret_matches("s3cret", corrupt)  # a damaged stored hash matches nothing, and raises nothing


def test_a_token_allows_what_the_key_may_pull_of_what_was_asked(auth):
    token = bearer(auth.token_for(basic("ci", "right"), ["repository:docker-hub/library/alpine:pull",
                                                          "repository:quay/x:pull"]))  # fmt: skip
    assert auth.check(token, "docker-hub/library/alpine") == "ci"
    assert auth.check(token, None) == "ci"  # /v2/ takes any valid token
    with pytest.raises(Denied):
        auth.check(token, "quay/x")  # asked for, not granted: 403, not a new challenge
    with pytest.raises(Denied):
        auth.check(token, "docker-hub/library/other")  # not asked for


def test_logins_that_fail(auth):
    no_colon = "Basic " + base64.b64encode(b"nocolon").decode()
    wrong = (basic("ci", "wrong"), basic("nobody", "right"), basic("old", "x"), basic("gone", "y"))
    for authorization in (None, "", "Bearer x", *wrong, "Basic !!notbase64", no_colon):
        with pytest.raises(Unauthorized):
            auth.token_for(authorization, ["repository:docker-hub/x:pull"])


def test_expired_forged_and_foreign_tokens_are_refused(auth, now, signing):
    token = bearer(auth.token_for(basic("all", "everything"), ["repository:a/b:pull"]))
    header, claims, signature = token.removeprefix("Bearer ").split(".")
    original = json.loads(base64.urlsafe_b64decode(claims + "=="))
    forged_claims = base64.urlsafe_b64encode(json.dumps({**original, "access": ["c/d"]}).encode()).decode().rstrip("=")
    for bad in (f"Bearer {header}.{forged_claims}.{signature}", f"Bearer {header}.{claims}.AAAA", "Bearer a.b",
                "Bearer ...", "Bearer " + "x" * 5000, "Basic abc", None):  # fmt: skip
        with pytest.raises(Unauthorized):
            auth.check(bad, "a/b")
    foreign = TokenService(lambda: [SigningKey("k1", b"t" * 32)], "pullthrough", clock=lambda: now[0])
    stranger = foreign.issue(PullKey("x", ("",), "", 0.0), ["a/b"])
    with pytest.raises(Unauthorized):
        auth.check(f"Bearer {stranger['token']}", "a/b")
    now[0] += 301
    with pytest.raises(Unauthorized, match="expired"):
        auth.check(token, "a/b")


def test_rotation_keeps_issued_tokens_valid_until_the_old_key_is_dropped(auth, signing):
    token = bearer(auth.token_for(basic("all", "everything"), ["repository:a/b:pull"]))
    signing.insert(0, SigningKey("k2", b"n" * 32))
    assert auth.check(token, "a/b") == "all"  # signed by k1, still listed
    fresh = bearer(auth.token_for(basic("all", "everything"), ["repository:a/b:pull"]))
    assert json.loads(base64.urlsafe_b64decode(fresh.split(" ")[1].split(".")[0] + "=="))["kid"] == "k2"
    signing.pop()
    with pytest.raises(Unauthorized, match="unknown key"):
        auth.check(token, "a/b")


def test_scope_parsing_is_strict_and_bounded():
    scopes = ["repository:a/b:pull,push", "repository:c:*", "registry:catalog:*", "repository:d:push",
              "repository:../x:pull", "repository:a b:pull"]  # fmt: skip
    assert requested_repositories(scopes) == ["a/b", "c"]
    assert requested_repositories(["repository:a:pull repository:b:pull"]) == ["a", "b"]
    assert len(requested_repositories([f"repository:r{i}:pull" for i in range(100)])) == 10
