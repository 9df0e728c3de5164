"""Registry authentication, driven by the upstream's WWW-Authenticate challenges (Bearer token flow or Basic)."""

from __future__ import annotations

import base64
import re
import threading
import time
from dataclasses import dataclass, field

# auth-param = token "=" ( token / quoted-string ); real registries send both forms (gcr.io leaves service unquoted).
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')

# Tokens are refreshed a little before they expire, and never trusted for longer than the spec's 60 s default if
# the token endpoint does not say.
TOKEN_EXPIRY_MARGIN_SECONDS = 10
DEFAULT_TOKEN_LIFETIME_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lower-cased
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_challenge(header: str) -> Challenge | None:
    """Parse the first challenge of a WWW-Authenticate header; None when it is not one we can answer."""
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None:
            break
        name, quoted, bare = match.groups()
        params[name.lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        position = match.end()
    return Challenge(scheme, params)


def basic_authorization(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class TokenCache:
    """Bearer tokens per (realm, service, scope, got with credentials), kept until shortly before they expire."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str, bool], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str, bool]) -> str | None:
        with self._lock:
            entry = self._tokens.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def put(self, key: tuple[str, str, str, bool], token: str, expires_in: float) -> None:
        lifetime = max(expires_in - TOKEN_EXPIRY_MARGIN_SECONDS, 0)
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + lifetime)
