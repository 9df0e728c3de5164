"""The Upstream port over HTTP: an OCI registry client with challenge-driven auth and hand-followed redirects.

Redirects are followed by hand so that credentials never cross hosts: the rule's own credentials go only to its
upstream host and to the token realm that host names; any other host gets at most an anonymous token.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from adapters.upstream.addresses import ALLOW_PRIVATE_ENV, AddressPolicy, checked_http_transport
from adapters.upstream.auth import (
    DEFAULT_TOKEN_LIFETIME_SECONDS,
    Challenge,
    TokenCache,
    basic_authorization,
    parse_challenge,
)
from adapters.upstream.credentials import Credentials, resolve_credentials
from core.digest import Digest
from core.errors import (
    BlobUnknown,
    Denied,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    RegistryError,
    TooManyRequests,
    Unavailable,
)
from core.mediatypes import UPSTREAM_ACCEPT
from core.ports import RateLimit, TagPage, UpstreamBlob, UpstreamHead, UpstreamManifest
from core.rules import Rule

log = logging.getLogger(__name__)

TIMEOUT_ENV = "PULLTHROUGH_UPSTREAM_TIMEOUT_SECONDS"
MAX_REDIRECTS = 5
RATE_LIMIT_WARNING = 10
RATE_LIMIT_HEADERS = ("ratelimit-remaining", "ratelimit-limit")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the spec's "at least 4 MB"; containerd refuses more than that, too
DEFAULT_RETRY_AFTER_SECONDS = 60
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def default_http_client(addresses: AddressPolicy, timeout_seconds: float = 30.0) -> httpx.Client:
    """Connections only to what `addresses` allows. `timeout_seconds` bounds each connect, read and write: a slow
    upstream fails the request, not hangs it."""
    return httpx.Client(
        transport=checked_http_transport(addresses, httpx.Limits(max_connections=64, max_keepalive_connections=32)),
        timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)),
        follow_redirects=False,
        headers={"User-Agent": "pullthrough", "Accept-Encoding": "identity"},
    )


class RegistryClient:
    def __init__(
        self,
        rule: Rule,
        http: httpx.Client,
        addresses: AddressPolicy | None = None,
        credentials: Callable[[], Credentials | None] = lambda: None,
    ) -> None:
        self._base = rule.upstream_base
        self._home_host = urlsplit(self._base).netloc
        self._credentials = credentials  # asked when needed: a rotated secret arrives without a restart
        self._addresses = addresses or AddressPolicy()
        self._http = http
        self._tokens = TokenCache()  # per rule: a token got with one rule's credentials is never another's
        self._challenges: dict[str, Challenge] = {}  # per host, so later requests authenticate up front

    # -- the Upstream port ----------------------------------------------------------------------------------------

    def head_manifest(self, repository: str, reference: str) -> UpstreamHead:
        with self._send("HEAD", repository, f"manifests/{reference}", {"Accept": UPSTREAM_ACCEPT}) as response:
            self._raise_for_status(response, ManifestUnknown)
            digest = response.headers.get("docker-content-digest")
            length = response.headers.get("content-length")
            return UpstreamHead(
                digest=_parse_digest_header(digest),
                media_type=response.headers.get("content-type"),
                size=int(length) if length and length.isdigit() else None,
                rate_limit=_rate_limit(response.headers),
            )

    def get_manifest(self, repository: str, reference: str) -> UpstreamManifest:
        with self._send("GET", repository, f"manifests/{reference}", {"Accept": UPSTREAM_ACCEPT}) as response:
            self._raise_for_status(response, ManifestUnknown)
            data = self._read_limited(response, MAX_MANIFEST_BYTES)
            return UpstreamManifest(
                data,
                response.headers.get("content-type"),
                _parse_digest_header(response.headers.get("docker-content-digest")),
            )

    def head_blob(self, repository: str, digest: Digest) -> int | None:
        with self._send("HEAD", repository, f"blobs/{digest}") as response:
            self._raise_for_status(response, BlobUnknown)
            length = response.headers.get("content-length")
            return int(length) if length and length.isdigit() else None

    @contextmanager
    def open_blob(self, repository: str, digest: Digest) -> Iterator[UpstreamBlob]:
        with self._send("GET", repository, f"blobs/{digest}") as response:
            self._raise_for_status(response, BlobUnknown)
            length = response.headers.get("content-length")
            yield UpstreamBlob(int(length) if length and length.isdigit() else None, _guarded(response))

    def list_tags(self, repository: str, n: int | None, last: str | None) -> TagPage:
        query = {key: value for key, value in (("n", n), ("last", last)) if value is not None}
        path = "tags/list" + (f"?{urlencode(query)}" if query else "")
        with self._send("GET", repository, path) as response:
            self._raise_for_status(response, NameUnknown)
            body = self._read_limited(response, MAX_MANIFEST_BYTES)
            try:
                tags = json.loads(body).get("tags") or []
            except (ValueError, AttributeError) as exc:
                raise Unavailable("upstream sent an unreadable tag list") from exc
            if not isinstance(tags, list):
                raise Unavailable("upstream sent an unreadable tag list")
            return TagPage(
                [tag for tag in tags if isinstance(tag, str)], 'rel="next"' in response.headers.get("link", "")
            )

    # -- HTTP -----------------------------------------------------------------------------------------------------

    @contextmanager
    def _send(
        self, method: str, repository: str, path: str, headers: dict[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        scope = f"repository:{repository}:pull"
        url = f"{self._base}/v2/{repository}/{path}"
        response = None
        try:
            for _ in range(MAX_REDIRECTS + 1):
                response = self._authorized_request(method, url, headers or {}, scope)
                if response.status_code not in _REDIRECTS or "location" not in response.headers:
                    break
                response.close()
                url = urljoin(url, response.headers["location"])
            else:
                raise Unavailable("upstream redirected too many times")
            self._watch_rate_limit(response)
            yield response
        except httpx.TimeoutException as exc:
            raise Unavailable(f"upstream {self._home_host} timed out") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"upstream {self._home_host} unreachable: {type(exc).__name__}") from exc
        finally:
            if response is not None:
                response.close()

    def _watch_rate_limit(self, response: httpx.Response) -> None:
        """Warn before the upstream's pull allowance runs out."""
        rate_limit = _rate_limit(response.headers)
        if rate_limit is not None and rate_limit.remaining <= RATE_LIMIT_WARNING:
            log.warning("upstream %s: %d pulls left in its rate-limit window", self._home_host, rate_limit.remaining)

    def _authorized_request(self, method: str, url: str, headers: dict[str, str], scope: str) -> httpx.Response:
        host = urlsplit(url).netloc
        authorization = self._authorization(host, scope, fetch=False)
        response = self._request(method, url, headers, authorization)
        if response.status_code == 401:
            challenge = parse_challenge(response.headers.get("www-authenticate", ""))
            if challenge is not None:
                self._challenges[host] = challenge
                authorization = self._authorization(host, scope, fetch=True)
                if authorization is not None:
                    response.close()
                    response = self._request(method, url, headers, authorization)
        return response

    def _request(self, method: str, url: str, headers: dict[str, str], authorization: str | None) -> httpx.Response:
        self._addresses.check(url)
        request_headers = dict(headers)
        if authorization:
            request_headers["Authorization"] = authorization
        request = self._http.build_request(method, url, headers=request_headers)
        return self._http.send(request, stream=True)

    def _authorization(self, host: str, scope: str, *, fetch: bool) -> str | None:
        challenge = self._challenges.get(host)
        if challenge is None:
            return None
        home = host == self._home_host
        if challenge.scheme == "basic":
            credentials = self._credentials() if home else None
            return basic_authorization(credentials.username, credentials.password) if credentials else None
        realm = challenge.realm
        if not realm:
            return None
        if fetch:  # none cached, or the cached one was just refused: a new one
            token = self._fetch_token(realm, challenge.params.get("service"), scope, send_credentials=home)
        else:
            token = self._tokens.get(_token_key(realm, challenge.params.get("service"), scope, home))
        return f"Bearer {token}" if token else None

    def token_for(self, challenge: Challenge, scope: str) -> str | None:
        """A token for `scope` from the realm `challenge` names (`rules validate` uses it to test credentials)."""
        if not challenge.realm:
            return None
        return self._fetch_token(challenge.realm, challenge.params.get("service"), scope, send_credentials=True)

    def _fetch_token(self, realm: str, service: str | None, scope: str, *, send_credentials: bool) -> str | None:
        self._addresses.check(realm)
        params = {"scope": scope, **({"service": service} if service else {})}
        headers = {}
        credentials = self._credentials() if send_credentials else None
        if credentials:
            headers["Authorization"] = basic_authorization(credentials.username, credentials.password)
        response = self._http.get(realm, params=params, headers=headers)
        if response.status_code in (401, 403):
            raise Denied("the upstream refused the credentials of this cache rule")
        if response.status_code == 429:
            raise TooManyRequests("upstream token service is throttling", retry_after=_retry_after(response))
        if response.status_code != 200:
            raise Unavailable(f"upstream token service answered {response.status_code}")
        token, expires_in = _read_token(response)
        if token is not None:
            self._tokens.put(_token_key(realm, service, scope, send_credentials), token, expires_in)
        return token

    @staticmethod
    def _raise_for_status(response: httpx.Response, not_found: type[RegistryError]) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 404:
            raise not_found(f"upstream: {not_found.default_message}")
        if status in (401, 403):
            raise Denied(f"upstream answered {status}")
        if status == 429:
            raise TooManyRequests("upstream is throttling requests", retry_after=_retry_after(response))
        if status == 400 and not_found is ManifestUnknown:
            raise ManifestInvalid("upstream rejected the manifest reference")
        raise Unavailable(f"upstream answered {status}")

    @staticmethod
    def _read_limited(response: httpx.Response, limit: int) -> bytes:
        chunks, total = [], 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > limit:
                raise ManifestInvalid(f"upstream response exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _guarded(response: httpx.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes()  # as the network delivers: httpx re-chunking costs more than it saves
    except httpx.TimeoutException as exc:
        raise Unavailable("upstream blob download timed out") from exc
    except httpx.HTTPError as exc:
        raise Unavailable(f"upstream blob download failed: {type(exc).__name__}") from exc


def _token_key(realm: str, service: str | None, scope: str, credentialed: bool) -> tuple[str, str, str, bool]:
    """A token got with the rule's credentials is never offered to a redirect host, nor an anonymous one at home."""
    return realm, service or "", scope, credentialed


def _read_token(response: httpx.Response) -> tuple[str | None, float]:
    """(token, lifetime in seconds) from a token service's answer; an unreadable answer is the upstream failing."""
    try:
        body = response.json()
        token = body.get("token") or body.get("access_token")
        expires_in = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME_SECONDS)
    except (ValueError, TypeError, AttributeError) as exc:
        raise Unavailable("upstream token service sent an unreadable answer") from exc
    return (str(token) if token else None), expires_in


def _parse_digest_header(value: str | None) -> Digest | None:
    if not value:
        return None
    try:
        return Digest.parse(value.strip())
    except RegistryError:
        return None


def _retry_after(response: httpx.Response) -> int:
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return int(value)
    try:
        return max(int(email.utils.parsedate_to_datetime(value).timestamp() - time.time()), 1)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_SECONDS


def _rate_limit(headers: httpx.Headers) -> RateLimit | None:
    """Docker Hub's `ratelimit-remaining: 17;w=21600` and `ratelimit-limit: 100;w=21600`."""
    remaining, limit = (headers.get(name, "").split(";", 1)[0].strip() for name in RATE_LIMIT_HEADERS)
    if not remaining.isdigit():
        return None
    return RateLimit(int(remaining), int(limit) if limit.isdigit() else None)


class HttpUpstreams:
    """One RegistryClient per rule, sharing a connection pool."""

    def __init__(self, http: httpx.Client | None = None, addresses: AddressPolicy | None = None) -> None:
        self._addresses = addresses or AddressPolicy(allow_private=os.environ.get(ALLOW_PRIVATE_ENV) == "1")
        self._http = http or default_http_client(self._addresses, float(os.environ.get(TIMEOUT_ENV, "30")))
        self._clients: dict[Rule, RegistryClient] = {}
        self._lock = threading.Lock()

    def for_rule(self, rule: Rule) -> RegistryClient:
        with self._lock:
            client = self._clients.get(rule)
            if client is None:
                client = self._clients[rule] = RegistryClient(
                    rule, self._http, self._addresses, lambda: resolve_credentials(rule.credentials)
                )
            return client
