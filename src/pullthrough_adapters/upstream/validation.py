"""What `pullthrough rules validate` checks, like ECR's ValidatePullThroughCacheRule: can the upstream be reached,
do the rule's credentials work, and (given an image) can a manifest be found."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import httpx

from core.errors import RegistryError
from core.rules import Rule
from pullthrough_adapters.upstream.addresses import AddressPolicy
from pullthrough_adapters.upstream.auth import basic_authorization, parse_challenge
from pullthrough_adapters.upstream.client import RegistryClient, default_http_client
from pullthrough_adapters.upstream.credentials import resolve_credentials

VALIDATION_TIMEOUT_SECONDS = 10.0


@dataclass
class Validation:
    prefix: str
    upstream: str
    reachable: bool = False
    authentication: str = "not checked"  # "not required", "anonymous", "accepted", "refused", "unavailable"
    sample: str | None = None  # "repository:tag -> digest"
    failure: str | None = None

    @property
    def valid(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "valid": self.valid}


def validate_rule(rule: Rule, http: httpx.Client, addresses: AddressPolicy, image: str | None = None) -> Validation:
    result = Validation(rule.prefix, rule.upstream)
    repository, _, tag = (image or "library/alpine:latest").rpartition(":")
    try:
        addresses.check(rule.upstream_base)
        credentials = resolve_credentials(rule.credentials)
        client = RegistryClient(rule, http, addresses, lambda: credentials)
        ping = http.get(f"{rule.upstream_base}/v2/")
        result.reachable = True
        challenge = parse_challenge(ping.headers.get("www-authenticate", "")) if ping.status_code == 401 else None
        if ping.status_code == 200:
            result.authentication = "not required"
        elif challenge is None:
            result.authentication = "unavailable"
            result.failure = f"{rule.upstream_base}/v2/ answered {ping.status_code}"
        elif challenge.scheme == "basic":
            authorization = basic_authorization(credentials.username, credentials.password) if credentials else None
            answer = http.get(f"{rule.upstream_base}/v2/", headers={"Authorization": authorization or ""})
            result.authentication = "accepted" if answer.status_code == 200 else "refused"
        else:  # a token from the realm proves the credentials, for the sample repository's scope
            client.token_for(challenge, f"repository:{rule.upstream_repository(repository)}:pull")
            result.authentication = "accepted" if credentials else "anonymous"
        if result.authentication == "refused":
            result.failure = "the upstream refused the rule's credentials"
        elif image and result.failure is None:
            head = client.head_manifest(rule.upstream_repository(repository), tag)
            result.sample = f"{image} -> {head.digest}"
    except httpx.HTTPError as exc:
        result.failure = f"{rule.upstream_base} unreachable: {type(exc).__name__}"
    except RegistryError as exc:
        if exc.code == "DENIED" and result.reachable and result.authentication == "not checked":
            result.authentication = "refused"
        result.failure = f"{exc.code}: {exc.message}"
    return result


def validate_rule_now(rule: Rule, addresses: AddressPolicy, image: str | None = None) -> Validation:
    """validate_rule over a connection of its own, closed afterwards (a command, an admin request)."""
    with default_http_client(addresses, timeout_seconds=VALIDATION_TIMEOUT_SECONDS) as http:
        return validate_rule(rule, http, addresses, image)
