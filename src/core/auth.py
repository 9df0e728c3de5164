"""Client authentication: pull keys, and the Docker registry token flow every container tool already speaks.

A pull key is a name and a secret, allowed to pull under some prefixes. `docker login` (or podman, skopeo, a
containerd credential) sends them as Basic credentials to our token endpoint, which answers a short-lived token
signed with HMAC-SHA256 and limited to what the key may pull of what was asked. Registry requests then carry that
token. Signing keys rotate: tokens name the key that signed them, and older keys keep verifying until retired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import Denied, Unauthorized
from core.reference import is_valid_name

TOKEN_LIFETIME_SECONDS = 300  # the token spec's floor is 60 s; a revoked key stops getting tokens at once anyway
# scrypt, memory-hard: a stolen key table does not give the secrets away (stdlib, no native dependency)
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_SCOPE = re.compile(r"^repository:([a-z0-9._/-]{1,255}):([a-z*,]+)\Z")
MAX_SCOPES = 10


@dataclass(frozen=True, slots=True)
class PullKey:
    name: str
    prefixes: tuple[str, ...]  # "" allows everything (the root rule's names included)
    secret_hash: str = field(repr=False)  # scrypt$salt$hash, never the secret
    created_at: float
    expires_at: float | None = None
    revoked: bool = False

    def may_pull(self, repository: str) -> bool:
        return any(prefix == "" or repository.startswith(prefix + "/") for prefix in self.prefixes)

    def usable(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "prefixes": list(self.prefixes), "secret_hash": self.secret_hash,
                "created_at": self.created_at, "expires_at": self.expires_at, "revoked": self.revoked}  # fmt: skip

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> PullKey:
        return cls(document["name"], tuple(document["prefixes"]), document["secret_hash"], document["created_at"],
                   document.get("expires_at"), bool(document.get("revoked")))  # fmt: skip


_DUMMY_HASH = "scrypt$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **SCRYPT)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def secret_matches(secret: str, secret_hash: str) -> bool:
    try:  # a stored hash that does not parse matches nothing (binascii.Error is a ValueError)
        scheme, salt, expected = secret_hash.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), **SCRYPT)
        return hmac.compare_digest(digest, base64.b64decode(expected))
    except (ValueError, TypeError):
        return False


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    secret: bytes = field(repr=False)


def requested_repositories(scopes: list[str]) -> list[str]:
    """Repositories asked for pull in `scope` parameters; other resource types and actions are ignored, as the
    token spec lets a server grant a subset."""
    repositories: list[str] = []
    for scope in scopes[:MAX_SCOPES]:
        for part in scope.split(" ")[:MAX_SCOPES]:
            match = _SCOPE.match(part)
            if match is not None and {"pull", "*"} & set(match.group(2).split(",")) and is_valid_name(match.group(1)):
                repositories.append(match.group(1))
    return repositories[:MAX_SCOPES]


class TokenService:
    def __init__(
        self,
        signing_keys: Callable[[], list[SigningKey]],
        service: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signing_keys = signing_keys  # newest first; the first signs, all verify
        self.service = service
        self._clock = clock

    def issue(self, key: PullKey, repositories: list[str]) -> dict[str, object]:
        now = self._clock()
        granted = sorted({name for name in repositories if key.may_pull(name)})
        claims = {"sub": key.name, "aud": self.service, "iat": int(now), "exp": int(now) + TOKEN_LIFETIME_SECONDS,
                  "access": granted}  # fmt: skip
        signing = self._signing_keys()[0]
        token = _sign(claims, signing)
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME_SECONDS, "issued_at": issued}

    def authorize(self, token: str, repository: str | None) -> str:
        """The key name a valid token was issued to; Unauthorized if the token is not valid, Denied if it does not
        cover `repository` (None: any valid token will do, as for /v2/)."""
        claims = self._verify(token)
        access = claims["access"]
        if repository is not None and (not isinstance(access, list) or repository not in access):
            raise Denied(f"this token does not allow pulling {repository!r}")
        return str(claims["sub"])

    def _verify(self, token: str) -> dict[str, object]:
        try:
            header_part, claims_part, signature_part = token.split(".")
            header = json.loads(_unb64(header_part))
            claims = json.loads(_unb64(claims_part))
            signature = _unb64(signature_part)
        except (ValueError, TypeError) as exc:
            raise Unauthorized("malformed token") from exc
        if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
            raise Unauthorized("unsupported token")
        key = next((key for key in self._signing_keys() if key.kid == header.get("kid")), None)
        if key is None:
            raise Unauthorized("token signed with an unknown key")
        expected = hmac.new(key.secret, f"{header_part}.{claims_part}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise Unauthorized("token signature does not verify")
        if claims.get("aud") != self.service or not isinstance(claims.get("access"), list):
            raise Unauthorized("token is not for this registry")
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= self._clock():
            raise Unauthorized("token expired")
        return claims


class Authenticator:
    """Who may pull what: pull keys (in the metadata store) and the tokens issued for them."""

    def __init__(self, keys: KeyStore, tokens: TokenService, clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self.tokens = tokens
        self._clock = clock

    def token_for(self, basic_authorization: str | None, scopes: list[str]) -> dict[str, object]:
        key = self.login(basic_authorization)
        return self.tokens.issue(key, requested_repositories(scopes))

    def check(self, bearer_authorization: str | None, repository: str | None) -> str:
        scheme, _, token = (bearer_authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized()
        return self.tokens.authorize(token.strip(), repository)

    def pullable(self, key_name: str, repositories: list[str]) -> list[str]:
        """Those of `repositories` the key may pull (one key lookup, however many names)."""
        key = self._keys.get_key(key_name)
        if key is None or not key.usable(self._clock()):
            return []
        return [repository for repository in repositories if key.may_pull(repository)]

    def login(self, basic_authorization: str | None) -> PullKey:
        """The pull key of Basic credentials (its name and secret); Unauthorized otherwise."""
        scheme, _, encoded = (basic_authorization or "").partition(" ")
        if scheme.lower() != "basic":
            raise Unauthorized("log in with a pull key: its name and secret")
        try:
            name, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError) as exc:
            raise Unauthorized("malformed Basic credentials") from exc
        key = self._keys.get_key(name) if name else None
        # The hash is computed even for unknown names, so timing does not tell which names exist.
        valid = secret_matches(secret, key.secret_hash if key else _DUMMY_HASH)
        if key is None or not valid or not key.usable(self._clock()):
            raise Unauthorized("unknown, revoked or expired pull key, or a wrong secret")
        return key


class KeyStore(Protocol):
    """Pull keys (their secrets' hashes, never the secrets): the metadata store keeps them."""

    def get_key(self, name: str) -> PullKey | None: ...

    def put_key(self, key: PullKey) -> None: ...

    def list_keys(self) -> list[PullKey]: ...


def _sign(claims: dict[str, object], key: SigningKey) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key.secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
