"""A client of a cache's pull API, as `pullthrough warm` uses it: manifests, and blobs read to the end.

A blob answered with a redirect is not followed: the cache redirects (on AWS, to a presigned S3 URL) only to a blob
it has stored, or has just finished filling, so the redirect itself confirms the blob is cached, and downloading it
from storage would add nothing. Nor is a blob the cache says it had (`X-Cache: hit`) read: it was verified when
stored. Any other blob answered with its bytes is read to the end and verified: the cache fills a blob while it
streams it, and holds the last byte back until the whole blob checked out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from core.digest import Digest, DigestVerifier
from core.mediatypes import UPSTREAM_ACCEPT, Manifest
from pullthrough_adapters.upstream.auth import (
    DEFAULT_TOKEN_LIFETIME_SECONDS,
    Challenge,
    TokenCache,
    basic_authorization,
    parse_challenge,
)

# A blob the fill function is still copying is answered 503 with a 5 s Retry-After on AWS (2 s locally, for a fill
# another server process runs): such answers are waited out, up to the fill function's 15 minutes and a margin. A
# longer Retry-After (an upstream left alone by the cache's breaker, a rate limit) fails the image at once.
RETRIED_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_SECONDS = 10.0
PATIENCE_SECONDS = 16 * 60.0
MAX_MANIFEST_BYTES = 4 << 20

Waiting = Callable[[str], None]  # told why a request waits before it is sent again
Received = Callable[[int], None]  # told of every chunk of a blob's bytes read


class PullFailed(Exception):
    """What the cache answered instead (its OCI error code and message), or why it could not be asked."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        self.message, self.code, self.status = message, code, status
        super().__init__(f"{code} ({status}): {message}" if code else message)


class Cancelled(Exception):
    """The run was interrupted: the request stopped between chunks."""


@dataclass(frozen=True, slots=True)
class BlobAnswer:
    redirected: bool  # the cache answered with a redirect to where it stores the blob
    bytes_read: int  # what the cache streamed to this client (0 for a redirect)
    cached: bool | None  # the cache had it before this request (its X-Cache header); None: it did not say


class CacheClient:
    """The cache at `base_url`; with `credentials` (a pull key's name and secret) for a cache in token mode, sent
    only to the token endpoint the cache's challenge names."""

    def __init__(
        self,
        base_url: str,
        credentials: tuple[str, str] | None = None,
        http: httpx.Client | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._credentials = credentials
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(60.0, connect=10.0),  # a blob filled on AWS may take 25 s before its answer
            follow_redirects=False,
            headers={"User-Agent": "pullthrough-warm", "Accept-Encoding": "identity"},
        )
        self._stop = stop or threading.Event()
        self._challenge: Challenge | None = None  # once seen, every request authenticates up front
        self._tokens = TokenCache()

    def manifest(self, name: str, reference: str, waiting: Waiting) -> Manifest:
        response = self._answer("GET", name, f"manifests/{reference}", {"Accept": UPSTREAM_ACCEPT}, waiting)
        with closing(response):
            data = self._body(response, MAX_MANIFEST_BYTES)
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
        asked = Digest.parse(reference) if Digest.looks_like(reference) else None
        digest = Digest.of(data, asked.algorithm if asked else "sha256")
        if asked is not None and digest != asked:
            raise PullFailed(f"the cache sent a manifest that does not match {reference}", "DIGEST_INVALID")
        return Manifest(data, media_type, digest)

    def blob(self, name: str, digest: Digest, waiting: Waiting, received: Received) -> BlobAnswer:
        response = self._answer("GET", name, f"blobs/{digest}", {}, waiting)
        cached = {"hit": True, "miss": False}.get(response.headers.get("x-cache", "").strip().lower())
        with closing(response):
            if response.is_redirect or cached:
                return BlobAnswer(redirected=response.is_redirect, bytes_read=0, cached=cached)
            verifier = DigestVerifier(digest)
            try:
                for chunk in response.iter_bytes():
                    if self._stop.is_set():
                        raise Cancelled()
                    verifier.update(chunk)
                    received(len(chunk))
            except httpx.HTTPError as exc:  # a fill that failed verification ends its answer early, too
                raise PullFailed(f"the cache broke off {digest} after {verifier.size} bytes: {_why(exc)}") from exc
        if not verifier.matches():
            raise PullFailed(f"the cache sent content that does not match {digest}", "DIGEST_INVALID")
        return BlobAnswer(redirected=False, bytes_read=verifier.size, cached=cached)

    # -- HTTP -----------------------------------------------------------------------------------------------------

    def _answer(self, method: str, name: str, path: str, headers: dict[str, str], waiting: Waiting) -> httpx.Response:
        """A 2xx or a redirect (body not read yet); PullFailed for anything else, once retrying is no use."""
        scope = f"repository:{name}:pull"
        waited = 0.0
        while True:
            if self._stop.is_set():
                raise Cancelled()
            response = self._authorized(method, f"{self._base}/v2/{name}/{path}", headers, scope)
            if response.is_success or response.is_redirect:
                return response
            with closing(response):
                error = self._error(response)
            pause = _retry_after(response)
            if response.status_code not in RETRIED_STATUSES or pause is None or waited + pause > PATIENCE_SECONDS:
                raise error
            waiting(f"{error.message}; asking again in {pause:g} s")
            if self._stop.wait(pause):
                raise Cancelled()
            waited += pause

    def _authorized(self, method: str, url: str, headers: dict[str, str], scope: str) -> httpx.Response:
        response = self._send(method, url, {**headers, **self._authorization(scope, fetch=False)})
        if response.status_code == 401:
            challenge = parse_challenge(response.headers.get("www-authenticate", ""))
            if challenge is not None:
                self._challenge = challenge
                authorization = self._authorization(scope, fetch=True)
                if authorization:
                    response.close()
                    response = self._send(method, url, {**headers, **authorization})
        return response

    def _authorization(self, scope: str, *, fetch: bool) -> dict[str, str]:
        challenge = self._challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            return {"Authorization": basic_authorization(*self._credentials)} if self._credentials else {}
        realm, service = challenge.realm, challenge.params.get("service", "")
        if not realm:
            return {}
        key = (realm, service, scope, True)
        token = self._fetch_token(realm, service, scope) if fetch else self._tokens.get(key)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _fetch_token(self, realm: str, service: str, scope: str) -> str:
        headers = {"Authorization": basic_authorization(*self._credentials)} if self._credentials else {}
        params = {"scope": scope, **({"service": service} if service else {})}
        response = self._send("GET", realm, headers, params)
        with closing(response):
            if not response.is_success:
                raise self._error(response)
            try:
                body = json.loads(self._body(response, 64 << 10))
                token = str(body.get("token") or body.get("access_token") or "")
                lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME_SECONDS)
            except (ValueError, TypeError, AttributeError) as exc:
                raise PullFailed(f"the token endpoint {realm} sent an unreadable answer") from exc
        if not token:
            raise PullFailed(f"the token endpoint {realm} sent no token")
        self._tokens.put((realm, service, scope, True), token, lifetime)
        return token

    def _send(
        self, method: str, url: str, headers: dict[str, str], params: dict[str, str] | None = None
    ) -> httpx.Response:
        request = self._http.build_request(method, url, headers=headers, params=params)
        try:
            return self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise PullFailed(f"could not reach {urlsplit(url).netloc}: {_why(exc)}") from exc

    def _body(self, response: httpx.Response, limit: int) -> bytes:
        chunks, total = [], 0
        try:
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > limit:
                    raise PullFailed(f"the cache's answer exceeds {limit} bytes")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise PullFailed(f"the cache broke off its answer: {_why(exc)}") from exc
        return b"".join(chunks)

    def _error(self, response: httpx.Response) -> PullFailed:
        """The OCI error the cache answered ({"errors": [{"code", "message"}]}), or the bare status."""
        status = response.status_code
        try:
            first = json.loads(self._body(response, 64 << 10))["errors"][0]
            return PullFailed(str(first.get("message", "")), str(first["code"]), status)
        except (PullFailed, ValueError, TypeError, KeyError, IndexError, AttributeError):
            return PullFailed(f"{response.request.url} answered {status} {response.reason_phrase}", status=status)


def _retry_after(response: httpx.Response) -> float | None:
    """The answer's Retry-After in seconds, when it is short enough to wait out here."""
    value = response.headers.get("retry-after", "").strip()
    if not (value.isascii() and value.isdigit()):
        return None
    seconds = float(value)
    return seconds if seconds <= MAX_RETRY_AFTER_SECONDS else None


def _why(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__
