"""Token signing keys in a Secrets Manager secret: {"keys": [{"kid": ..., "secret": ...}, ...]}, newest first; the
template's generated secret, a single {"kid", "secret"}, works too. To rotate, put a new version with a new key in
front and the old one after it: instances pick it up within five minutes (the cache), and the old key keeps
verifying the tokens it signed (they live five minutes) until a later version drops it."""

from __future__ import annotations

from typing import Any

from core.auth import SigningKey
from core.errors import Unavailable

CACHE_SECONDS = 300


class SecretSigningKeys:
    def __init__(self, secret_arn: str) -> None:
        self._secret_arn = secret_arn

    def __call__(self) -> list[SigningKey]:
        from aws_lambda_powertools.utilities import parameters

        try:
            document: Any = parameters.get_secret(self._secret_arn, transform="json", max_age=CACHE_SECONDS)
        except Exception as exc:  # Powertools wraps AWS errors in its own GetParameterError
            raise Unavailable("the token signing keys cannot be read") from exc
        entries = document["keys"] if isinstance(document, dict) and "keys" in document else [document]
        return [SigningKey(str(entry["kid"]), str(entry["secret"]).encode()) for entry in entries]
