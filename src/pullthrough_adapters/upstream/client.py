"""The Upstream port over HTTP: an OCI registry client with challenge-driven auth and hand-followed redirects.

Redirects are followed by hand so that credentials never cross hosts: the rule's own credentials go only to its
upstream host and to the token realm that host names; any other host gets at most an anonymous token.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

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
from core.mediatypes import OCI_INDEX, UPSTREAM_ACCEPT, descriptors, parse_manifest
from core.ports import RateLimit, TagPage, UpstreamBlob, UpstreamHead, UpstreamManifest
from core.referrers import index_of
from core.rules import Rule
from pullthrough_adapters.upstream.addresses import AddressPolicy
from pullthrough_adapters.upstream.auth import (
    DEFAULT_TOKEN_LIFETIME_SECONDS,
    Challenge,
    TokenCache,
    basic_authorization,
    parse_challenge,
)
from pullthrough_adapters.upstream.credentials import Credentials, resolve_credentials
from pullthrough_adapters.upstream.deadlines import within
from pullthrough_adapters.upstream.transport import checked_http_transport

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
RATE_LIMIT_WARNING = 10
RATE_LIMIT_HEADERS = ("ratelimit-remaining", "ratelimit-limit")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the spec's "at least 4 MB"; containerd refuses more than that, too
DEFAULT_RETRY_AFTER_SECONDS = 60
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# What says the upstream as a whole is struggling, rather than that one request went wrong.
_UPSTREAM_DOWN = frozenset({502, 503, 504})
# Fast failures (a refused or reset connection, 502/503/504) are tried again after these pauses: clients do not
# retry a 503 themselves, and one bad answer among many good ones should cost nobody a pull. A timeout is not
# retried: it has taken long enough.
RETRY_PAUSES = (0.1, 0.3, 0.8)
MAX_RETRY_AFTER_WAIT = 2.0  # a 503's Retry-After up to this is waited out; a longer one goes to the breaker
# A blob download cut short is resumed with a Range request from the last byte received, this many times.
MAX_RESUMES = 3
# A body that brings fewer bytes than this per `timeout_seconds` has stalled (a drip-feed never times out a read).
MIN_PROGRESS_BYTES = 64 << 10
# An upstream without a referrers API (a 404, which the spec forbids one that has it) is not asked again for this
# long; its referrers come from the tag schema meanwhile. A paged referrers answer is read this many pages deep.
REFERRERS_API_RECHECK_SECONDS = 3600.0
MAX_REFERRERS_PAGES = 16


def default_http_client(
    addresses: AddressPolicy, timeout_seconds: float = 30.0, on_response: ResponseHook | None = None
) -> httpx.Client:
    """Connections only to what `addresses` allows. `timeout_seconds` bounds each connect, read and write: a slow
    upstream fails the request, not hangs it. `on_response` sees every answer (for metrics)."""
    return httpx.Client(
        event_hooks={"response": [on_response] if on_response else []},
        transport=checked_http_transport(addresses, httpx.Limits(max_connections=64, max_keepalive_connections=32)),
        timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)),
        follow_redirects=False,
        headers={"User-Agent": "pullthrough", "Accept-Encoding": "identity"},
    )


ResponseHook = Callable[[httpx.Response], None]


class _Stalled(Exception):
    pass


class RegistryClient:
    def __init__(
        self,
        rule: Rule,
        http: httpx.Client,
        addresses: AddressPolicy | None = None,
        credentials: Callable[[], Credentials | None] = lambda: None,
        timeout_seconds: float = 30.0,
    ) -> None:
        self._base = rule.upstream_base
        self._home_host = urlsplit(self._base).netloc
        self._credentials = credentials  # asked when needed: a rotated secret arrives without a restart
        self._addresses = addresses or AddressPolicy()
        self._http = http
        self._tokens = TokenCache()  # per rule: a token got with one rule's credentials is never another's
        self._challenges: dict[str, Challenge] = {}  # per host, so later requests authenticate up front
        self._timeout = timeout_seconds  # for an answer's headers, and the window a body must progress in
        self._no_referrers_api_until = 0.0  # time.monotonic

    # -- the Upstream port ----------------------------------------------------------------------------------------

    def head_manifest(self, repository: str, reference: str) -> UpstreamHead:
        with self._send("HEAD", repository, f"manifests/{reference}", {"Accept": UPSTREAM_ACCEPT}) as response:
            self._raise_for_status(response, ManifestUnknown)
            digest = response.headers.get("docker-content-digest")
            length = response.headers.get("content-length")
            return UpstreamHead(
                digest=_parse_digest_header(digest),
                media_type=response.headers.get("content-type"),
                size=_number(length),
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
            return _number(response.headers.get("content-length"))

    @contextmanager
    def open_blob(self, repository: str, digest: Digest) -> Iterator[UpstreamBlob]:
        current = [self._open("GET", repository, f"blobs/{digest}", {})]  # replaced by each resumed request
        try:
            self._raise_for_status(current[0], BlobUnknown)
            size = _content_length(current[0])
            yield UpstreamBlob(size, self._resumed(current, repository, digest, size))
        finally:
            current[-1].close()

    def _resumed(
        self, current: list[httpx.Response], repository: str, digest: Digest, size: int | None
    ) -> Iterator[bytes]:
        """The blob's bytes; a download cut short or stalled goes on from the last byte received (the digest is
        verified over the whole, by the writer)."""
        received, skip, resumes = 0, 0, 0
        while True:
            try:
                for chunk in self._body(current[-1]):
                    if skip:  # an upstream that ignored the Range sends it all again
                        dropped = min(skip, len(chunk))
                        chunk, skip = chunk[dropped:], skip - dropped
                    received += len(chunk)
                    if chunk:
                        yield chunk
                if size is None or received >= size:
                    return
                failure = Unavailable(f"upstream ended {digest} after {received} of {size} bytes")
            except (_Stalled, httpx.TimeoutException):
                failure = Unavailable(f"upstream download of {digest} stalled", whole_upstream=True)
            except httpx.TransportError as exc:
                failure = Unavailable(f"upstream download of {digest} broke off: {type(exc).__name__}")
            if size is None or resumes == MAX_RESUMES:
                raise failure
            resumes += 1
            log.info("resuming %s at byte %d of %d (%s)", digest, received, size, failure.message)
            current[-1].close()
            current.append(self._open("GET", repository, f"blobs/{digest}", {"Range": f"bytes={received}-"}))
            skip = self._resume_offset(current[-1], received, size)

    def _resume_offset(self, response: httpx.Response, received: int, size: int) -> int:
        """How many bytes of the resumed answer to drop: none for a 206 from `received`, all before it for a 200."""
        if response.status_code == 200:
            return received
        self._raise_for_status(response, BlobUnknown)
        if not response.headers.get("content-range", "").startswith(f"bytes {received}-"):
            raise Unavailable(f"upstream resumed at the wrong place: {response.headers.get('content-range')!r}")
        return 0

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

    def referrers(self, repository: str, subject: Digest) -> UpstreamManifest | None:
        if time.monotonic() < self._no_referrers_api_until:
            return None
        entries: list[dict[str, Any]] = []
        path: str | None = f"referrers/{subject}"
        for _ in range(MAX_REFERRERS_PAGES):
            if path is None:
                break
            with self._send("GET", repository, path, {"Accept": OCI_INDEX}) as response:
                content_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
                if response.status_code == 404 or (response.is_success and content_type != OCI_INDEX):
                    self._remember_no_referrers_api(response)
                    return None
                self._raise_for_status(response, NameUnknown)
                try:
                    page = parse_manifest(self._read_limited(response, MAX_MANIFEST_BYTES))
                    entries += descriptors(page, "manifests")
                except RegistryError as exc:
                    raise Unavailable(f"upstream {self._home_host} sent an unreadable referrers index") from exc
                path = _next_referrers_page(response, repository)
        return UpstreamManifest(index_of(entries), OCI_INDEX, None)

    def _remember_no_referrers_api(self, response: httpx.Response) -> None:
        """An answer that says the upstream has no referrers API, remembered for a while; but a 404 naming the
        repository unknown says only that, and is raised."""
        if response.status_code == 404:
            body = self._read_limited(response, 64 << 10)
            with suppress(ValueError, AttributeError, TypeError, IndexError, KeyError):
                if json.loads(body)["errors"][0]["code"] == NameUnknown.code:
                    raise NameUnknown("upstream: the repository is unknown")
        log.info("upstream %s has no referrers API: answering from the referrers tag schema", self._home_host)
        self._no_referrers_api_until = time.monotonic() + REFERRERS_API_RECHECK_SECONDS

    # -- HTTP -----------------------------------------------------------------------------------------------------

    @contextmanager
    def _send(
        self, method: str, repository: str, path: str, headers: dict[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        response = self._open(method, repository, path, headers or {})
        try:
            yield response
        finally:
            response.close()

    def _open(self, method: str, repository: str, path: str, headers: dict[str, str]) -> httpx.Response:
        """The upstream's answer (headers read, body not), after redirects, authentication and retries of fast
        failures; Unavailable when there is none to give."""
        for pause in (*RETRY_PAUSES, None):
            try:
                response = self._follow(method, f"{self._base}/v2/{repository}/{path}", headers, repository)
            except httpx.PoolTimeout as exc:  # this process has too many requests open: not the upstream's fault
                raise Unavailable(f"too many requests to {self._home_host} at once") from exc
            except httpx.TimeoutException as exc:
                raise Unavailable(f"upstream {self._home_host} timed out", whole_upstream=True) from exc
            except httpx.TransportError as exc:  # refused, reset, closed early
                if pause is None:
                    raise Unavailable(
                        f"upstream {self._home_host} unreachable: {type(exc).__name__}", whole_upstream=True
                    ) from exc
                time.sleep(pause)
                continue
            except httpx.HTTPError as exc:
                raise Unavailable(f"upstream {self._home_host} failed: {type(exc).__name__}") from exc
            if response.status_code not in _UPSTREAM_DOWN or pause is None:
                self._watch_rate_limit(response)
                return response
            asked = _retry_after(response, default=0)
            if asked > MAX_RETRY_AFTER_WAIT:
                return response  # the breaker honours it
            response.close()
            time.sleep(max(pause, asked))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _follow(self, method: str, url: str, headers: dict[str, str], repository: str) -> httpx.Response:
        scope = f"repository:{repository}:pull"
        for _ in range(MAX_REDIRECTS + 1):
            response = self._authorized_request(method, url, headers, scope)
            if response.status_code not in _REDIRECTS or "location" not in response.headers:
                return response
            response.close()
            url = urljoin(url, response.headers["location"])
        raise Unavailable("upstream redirected too many times")

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
        with within(self._timeout):  # the answer's headers, however slowly they drip
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
        with within(self._timeout):
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
        if status in _UPSTREAM_DOWN:
            raise Unavailable(
                f"upstream answered {status}", retry_after=_retry_after(response, default=10), whole_upstream=True
            )
        raise Unavailable(f"upstream answered {status}")  # a 500 for one name says nothing of the others

    def _read_limited(self, response: httpx.Response, limit: int) -> bytes:
        chunks, total = [], 0
        try:
            for chunk in self._body(response):
                total += len(chunk)
                if total > limit:
                    raise ManifestInvalid(f"upstream response exceeds {limit} bytes")
                chunks.append(chunk)
        except (_Stalled, httpx.TimeoutException) as exc:
            raise Unavailable(f"upstream {self._home_host} stalled", whole_upstream=True) from exc
        except httpx.TransportError as exc:
            raise Unavailable(f"upstream {self._home_host} broke off: {type(exc).__name__}") from exc
        return b"".join(chunks)

    def _body(self, response: httpx.Response) -> Iterator[bytes]:
        """The body as the network delivers it (httpx re-chunking costs more than it saves); _Stalled when it brings
        fewer than MIN_PROGRESS_BYTES in a window of the timeout: a drip-feed never trips a read timeout."""
        window_start, window_bytes = time.monotonic(), 0
        for chunk in response.iter_bytes():
            window_bytes += len(chunk)
            now = time.monotonic()
            if now - window_start >= self._timeout:
                if window_bytes < MIN_PROGRESS_BYTES:
                    raise _Stalled()
                window_start, window_bytes = now, 0
            yield chunk


def _next_referrers_page(response: httpx.Response, repository: str) -> str | None:
    """The next page's path below /v2/<repository>/, from a Link header; None on the last page, or when the link
    leads anywhere else."""
    link = response.links.get("next", {}).get("url")
    if not link:
        return None
    here = str(response.url)
    target = urlsplit(urljoin(here, link))
    if target.netloc != urlsplit(here).netloc:
        return None
    prefix = f"/v2/{repository}/"
    if not target.path.startswith(prefix + "referrers/"):
        return None
    return target.path[len(prefix) :] + (f"?{target.query}" if target.query else "")


def _content_length(response: httpx.Response) -> int | None:
    return _number(response.headers.get("content-length"))


def _number(value: str | None) -> int | None:
    """A header's non-negative integer; None for anything else (Latin-1 has digits, such as "²", int() refuses)."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    return int(value)


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


def _retry_after(response: httpx.Response, default: int = DEFAULT_RETRY_AFTER_SECONDS) -> int:
    value = response.headers.get("retry-after", "").strip()
    seconds = _number(value)
    if seconds is not None:
        return min(seconds, 86400)
    try:
        return max(int(email.utils.parsedate_to_datetime(value).timestamp() - time.time()), 1)
    except (TypeError, ValueError, OverflowError):
        return default


def _rate_limit(headers: httpx.Headers) -> RateLimit | None:
    """Docker Hub's `ratelimit-remaining: 17;w=21600` and `ratelimit-limit: 100;w=21600`."""
    remaining, limit = (headers.get(name, "").split(";", 1)[0].strip() for name in RATE_LIMIT_HEADERS)
    left = _number(remaining)
    return None if left is None else RateLimit(left, _number(limit))


class HttpUpstreams:
    """One RegistryClient per rule, sharing a connection pool."""

    def __init__(
        self,
        addresses: AddressPolicy,
        timeout_seconds: float = 30.0,
        http: httpx.Client | None = None,
        on_response: ResponseHook | None = None,
    ) -> None:
        self._addresses = addresses
        self._timeout = timeout_seconds
        self._http = http or default_http_client(addresses, timeout_seconds, on_response)
        self._clients: dict[Rule, RegistryClient] = {}
        self._lock = threading.Lock()

    def for_rule(self, rule: Rule) -> RegistryClient:
        with self._lock:
            client = self._clients.get(rule)
            if client is None:
                client = self._clients[rule] = RegistryClient(
                    rule, self._http, self._addresses, lambda: resolve_credentials(rule.credentials), self._timeout
                )
            return client
