"""Upstream credentials, found from a rule's reference and never kept in a rule, a log line or an answer.

- `env:NAME`: the variables NAME_USERNAME and NAME_PASSWORD.
- `file:/path`: a JSON file {"username": ..., "password": ...} (or "accessToken", ECR's name for it).
- `arn:aws:secretsmanager:...`: a Secrets Manager secret of the same JSON shape, the one ECR's pull through cache
  uses under `ecr-pullthroughcache/`, fetched through Powertools (cached for five minutes, so rotations arrive).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import Denied

SECRET_CACHE_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)


class CredentialsUnavailable(Denied):
    """The rule names credentials that cannot be read; the upstream is then not asked at all."""


def resolve_credentials(reference: str | None) -> Credentials | None:
    if not reference:
        return None
    kind, _, where = reference.partition(":")
    if kind == "env":
        username, password = os.environ.get(f"{where}_USERNAME"), os.environ.get(f"{where}_PASSWORD")
        if not username or not password:
            raise CredentialsUnavailable(f"credentials {reference}: {where}_USERNAME or {where}_PASSWORD is not set")
        return Credentials(username, password)
    if kind == "file":
        try:
            return _from_document(json.loads(Path(where).read_text()), reference)
        except (OSError, ValueError) as exc:
            raise CredentialsUnavailable(f"credentials {reference} cannot be read") from exc
    if reference.startswith("arn:aws:secretsmanager:"):
        from aws_lambda_powertools.utilities import parameters  # only deployments that use it pay for the import

        try:
            secret = parameters.get_secret(reference, transform="json", max_age=SECRET_CACHE_SECONDS)
        except Exception as exc:  # Powertools wraps every AWS error in its own GetParameterError
            raise CredentialsUnavailable("the credentials secret cannot be read") from exc
        return _from_document(secret, "the credentials secret")
    raise CredentialsUnavailable(f"unknown kind of credentials reference {reference.split(':', 1)[0]!r}")


def _from_document(document: Any, where: str) -> Credentials:
    if isinstance(document, dict):
        username, password = document.get("username"), document.get("password") or document.get("accessToken")
        if isinstance(username, str) and isinstance(password, str) and username and password:
            return Credentials(username, password)
    raise CredentialsUnavailable(f"{where} has no username and password (or accessToken)")
