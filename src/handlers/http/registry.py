"""The OCI Distribution pull API over HTTP: parse the request, call the cache once, shape the response."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import BinaryIO, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.auth import Authenticator
from core.budget import MissBudget
from core.cache import PullThroughCache
from core.errors import (
    NameInvalid,
    NameUnknown,
    PaginationNumberInvalid,
    RangeInvalid,
    RegistryError,
    Unauthorized,
    Unsupported,
)
from core.mediatypes import OCI_INDEX, Accept
from core.paging import page
from core.ports import BlobBody, LocalBlob, Redirect, SizeOnly, StreamedBlob
from core.reading import READERS
from core.reference import is_valid_name
from handlers.http.lanes import UpstreamLanes
from handlers.http.limits import RequestLimits
from handlers.http.ranges import parse_range
from handlers.http.security_headers import NoSniff

log = logging.getLogger(__name__)
T = TypeVar("T")

API_VERSION_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
PULL = ["GET", "HEAD"]
PUSH_AND_DELETE = ["POST", "PUT", "PATCH", "DELETE"]
# containerd's `ns`: the registry host a mirrored name belongs to (host[:port]); anything else is refused.
_NAMESPACE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})(?::[0-9]{1,5})?\Z")
MAX_PAGE_DIGITS = 9

PageError = Callable[[Request, RegistryError], Response | None]  # a page for an error off the registry's routes
TokenRealm = Callable[[Request], str]


def create_app(
    cache: PullThroughCache,
    auth: Authenticator | None = None,
    *,
    token_realm: TokenRealm | None = None,
    budget: MissBudget | None = None,
    lanes: UpstreamLanes | None = None,
    pages: APIRouter | None = None,
    page_error: PageError | None = None,
) -> FastAPI:
    """The registry; with `auth`, every /v2/ route takes only tokens from its /token endpoint at `token_realm`
    (the configured public URL, never whatever Host a client sends). `budget` limits what each client may make the
    cache ask upstreams for; `lanes` keep one upstream's slowness to itself (see handlers.lanes); `pages`: the status
    pages and /metrics of a local server (handlers.http.status), whose errors `page_error` answers as pages."""
    if auth is not None and token_realm is None:
        raise ValueError("token auth needs the token endpoint's public URL")
    # Hits are looked up on the event loop (reads only); anything that needs the upstream, or a write, runs in a
    # worker thread.
    app = FastAPI(title="pullthrough", docs_url=None, redoc_url=None, openapi_url=None)
    app.router.redirect_slashes = False  # /v2 and /v2/ are both routes; a redirect would need our public URL
    app.add_middleware(RequestLimits)
    app.add_middleware(NoSniff)

    @app.exception_handler(RegistryError)
    def registry_error(request: Request, error: RegistryError) -> Response:
        page = page_error(request, error) if page_error is not None else None
        if page is not None:
            return page
        response = _error_response(request, error)
        challenged = isinstance(error, Unauthorized) and request.url.path.startswith("/v2")
        if challenged and auth is not None and token_realm is not None:
            scope = getattr(request.state, "scope", None)
            challenge = f"Bearer realm={_quoted(token_realm(request))},service={_quoted(auth.tokens.service)}"
            response.headers["WWW-Authenticate"] = challenge + (f",scope={_quoted(scope)}" if scope else "")
        return response

    def authorize(request: Request, name: str | None) -> str | None:
        """The pull key's name (None without auth); 401 with a challenge, or 403 for a repository not allowed."""
        if auth is None:
            return None
        if name is not None and is_valid_name(name):
            request.state.scope = f"repository:{name}:pull"
        return auth.check(request.headers.get("authorization"), name)

    async def from_upstream(request: Request, key: str | None, name: str, work: Callable[[], T]) -> T:
        """Work the cache could not do from what it holds: counted against the client's budget, run in the lane
        of the upstream it waits on."""
        client = f"key:{key}" if key is not None else f"address:{request.client.host if request.client else '-'}"

        def charged() -> T:
            if budget is not None:
                budget.charge(client)
            return work()

        if lanes is not None:
            return await lanes.run(cache.upstream_of(name), charged)
        return await run_in_threadpool(charged)

    @app.get("/token")
    def token(request: Request) -> Response:
        if auth is None:
            raise NameUnknown("no such endpoint: this registry does not use tokens")
        answer = auth.token_for(request.headers.get("authorization"), request.query_params.getlist("scope"))
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 405:
            return _error_response(request, Unsupported())
        return _error_response(request, NameUnknown("no such endpoint"))

    @app.exception_handler(Exception)
    def unexpected_error(request: Request, error: Exception) -> Response:
        # A registry error while a body streams (a blob failing verification) reaches here, wrapped by Starlette,
        # once the response has started: the client sees the connection close; it is no bug.
        cause = error.__cause__ if isinstance(error.__cause__, RegistryError) else error
        if isinstance(cause, RegistryError):
            log.warning("aborted %s %s: %s", request.method, request.url.path, cause.message)
        else:
            log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
        return _error_response(request, RegistryError())

    if pages is not None:
        app.include_router(pages)

    # Routes take the Request alone and read its path_params: a typed parameter has FastAPI build a pydantic field
    # for it when the app is made (and import pydantic.v1 to check it is none), tens of ms of every cold start.
    @app.api_route("/v2/", methods=PULL)
    @app.api_route("/v2", methods=PULL, include_in_schema=False)
    async def ping(request: Request) -> Response:
        authorize(request, None)
        return JSONResponse({}, headers=API_VERSION_HEADERS)

    @app.get("/v2/_catalog")
    def catalog(request: Request) -> Response:
        key = authorize(request, None)
        names = cache.catalog() if key is None or auth is None else auth.pullable(key, cache.catalog())
        n, last = _pagination(request)
        listed, more = page(names, n, last)
        return _listing({"repositories": listed}, "/v2/_catalog", n, listed, more)

    @app.api_route("/v2/{name:path}/manifests/{reference}", methods=PULL)
    async def manifest(request: Request) -> Response:
        name, reference = _routed(request), request.path_params["reference"]
        key = authorize(request, name)
        with_body = request.method == "GET"
        accept = Accept.parse(request.headers.getlist("accept"))
        served = cache.lookup_manifest(name, reference, accept, with_body=with_body)
        if served is None:
            served = await from_upstream(
                request, key, name, lambda: cache.manifest(name, reference, accept, with_body=with_body)
            )
        record = served.record
        headers = {
            "Content-Type": record.media_type,
            "Content-Length": str(record.size),
            "Docker-Content-Digest": str(record.digest),
            "ETag": f'"{record.digest}"',
            **API_VERSION_HEADERS,
        }
        if served.warning:
            headers["Warning"] = f'299 - "{served.warning}"'
        pull = served.pull  # written after the answer, in a thread: never a write on the event loop
        background = BackgroundTask(cache.record_pull, pull) if pull is not None else None
        return _with_namespace(Response(served.data or b"", headers=headers, background=background), request)

    @app.api_route("/v2/{name:path}/blobs/{digest}", methods=PULL)
    async def blob(request: Request) -> Response:
        name, digest = _routed(request), request.path_params["digest"]
        key = authorize(request, name)
        head = request.method == "HEAD"
        body = cache.lookup_blob(name, digest, head=head)
        try:
            file = _opened(body, head)
        except FileNotFoundError:  # the lifecycle deleted it since the lookup: filled again, as a miss is
            body = None
        cached = body is not None
        if body is None:
            body = await from_upstream(request, key, name, lambda: cache.blob(name, digest, head=head))
            file = _opened(body, head)
        response = _blob_response(body, file, digest, request.headers.get("range"), head=head, lanes=lanes)
        # As HTTP caches say it: whether this repository had the blob, or this request had it filled (or joined a
        # fill). `pullthrough warm` reports from it what was cached already and what it fetched.
        response.headers["X-Cache"] = "hit" if cached else "miss"
        return _with_namespace(response, request)

    @app.get("/v2/{name:path}/tags/list")
    async def tags(request: Request) -> Response:
        name = _routed(request)
        key = authorize(request, name)
        n, last = _pagination(request)
        listing = await from_upstream(request, key, name, lambda: cache.tags(name, n, last))  # always asks upstream
        body = {"name": listing.name, "tags": listing.tags}
        return _with_namespace(_listing(body, f"/v2/{name}/tags/list", n, listing.tags, listing.has_more), request)

    def _routed(request: Request) -> str:
        """The repository the path names. containerd, as a mirror, names the registry in `ns` and the repository as
        that registry knows it."""
        name: str = request.path_params["name"]
        namespace = _namespace(request)
        if namespace:
            return cache.rules.for_namespace(namespace, name) or name
        return name

    @app.get("/v2/{name:path}/referrers/{digest}")
    async def referrers(request: Request) -> Response:
        name, digest = _routed(request), request.path_params["digest"]
        key = authorize(request, name)
        artifact_type = request.query_params.get("artifactType") or None
        served = cache.lookup_referrers(name, digest, artifact_type)
        if served is None:
            served = await from_upstream(request, key, name, lambda: cache.referrers(name, digest, artifact_type))
        headers = {"Content-Type": OCI_INDEX, **API_VERSION_HEADERS}
        if served.filtered:
            headers["OCI-Filters-Applied"] = "artifactType"
        if served.warning:
            headers["Warning"] = f'299 - "{served.warning}"'
        pull = served.pull
        background = BackgroundTask(cache.record_pull, pull) if pull is not None else None
        return _with_namespace(Response(served.data, headers=headers, background=background), request)

    @app.api_route("/v2/{path:path}", methods=[*PULL, *PUSH_AND_DELETE])
    async def other(request: Request) -> Response:
        if request.method in PULL:
            raise NameUnknown("no such endpoint")
        raise Unsupported()

    return app


def _error_response(request: Request, error: RegistryError) -> Response:
    response = JSONResponse(
        error.to_body(), status_code=error.http_status, headers={**error.headers(), **API_VERSION_HEADERS}
    )
    if request.method == "HEAD":  # HTTP servers drop a HEAD body themselves; Mangum does not
        response.body = b""
    return response


def _quoted(value: str) -> str:
    """An RFC 9110 quoted-string: a quote or backslash in `value` cannot end it (and add a second realm=)."""
    clean = "".join(character for character in value if character.isprintable())
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _namespace(request: Request) -> str | None:
    namespace = request.query_params.get("ns")
    if namespace is None or namespace == "":
        return None
    if not _NAMESPACE.match(namespace):
        raise NameInvalid("ns must be a registry host name, with an optional port")
    return namespace


def _with_namespace(response: Response, request: Request) -> Response:
    namespace = _namespace(request)
    if namespace:  # what the spec asks of a registry that scopes by ns
        response.headers["OCI-Namespace"] = namespace
    return response


def _opened(body: BlobBody | None, head: bool) -> BinaryIO | None:
    """A cached file is opened before the answer starts: once open, deleting it (the lifecycle) cannot cut it."""
    return open(body.path, "rb") if isinstance(body, LocalBlob) and not head else None


def _blob_response(
    body: BlobBody,
    file: BinaryIO | None,
    digest: str,
    range_header: str | None,
    *,
    head: bool,
    lanes: UpstreamLanes | None,
) -> Response:
    try:
        return _blob_answer(body, file, digest, range_header, head=head, lanes=lanes)
    except BaseException:
        if file is not None:
            file.close()
        raise


def _blob_answer(
    body: BlobBody,
    file: BinaryIO | None,
    digest: str,
    range_header: str | None,
    *,
    head: bool,
    lanes: UpstreamLanes | None,
) -> Response:
    if isinstance(body, Redirect):
        return RedirectResponse(body.url, status_code=307)
    headers = {
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        **API_VERSION_HEADERS,
    }
    size = body.size
    byte_range = parse_range(range_header, size) if range_header else None
    if byte_range is None:
        start, length, status = 0, size, 200
    else:
        start, end = byte_range
        if start >= size or end < start:
            raise RangeInvalid(size)
        length, status = end - start + 1, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(length)
    if head or isinstance(body, SizeOnly) or length == 0:
        if file is not None:
            file.close()
        return Response(status_code=status, headers=headers)
    if isinstance(body, StreamedBlob):  # a fill in flight: its reads may wait on the upstream
        streamed = body.chunks(start, length)
        content: Iterator[bytes] | AsyncIterator[bytes] = lanes.stream(streamed) if lanes is not None else streamed
        return StreamingResponse(content, status_code=status, headers=headers)
    assert file is not None  # a LocalBlob, not a HEAD: _opened opened it
    return StreamingResponse(READERS.file_chunks(file, start, length), status_code=status, headers=headers)


def _pagination(request: Request) -> tuple[int | None, str | None]:
    raw_n = request.query_params.get("n")
    n = None
    if raw_n is not None:
        if not (raw_n.isascii() and raw_n.isdigit()) or len(raw_n) > MAX_PAGE_DIGITS:
            raise PaginationNumberInvalid(f"n must be a non-negative integer, got {raw_n[:20]!r}")
        n = int(raw_n)
    return n, request.query_params.get("last")


def _listing(body: Mapping[str, object], path: str, n: int | None, listed: list[str], more: bool) -> Response:
    """A page of names, with the spec's `Link: <...>; rel="next"` when more follow."""
    response = JSONResponse(body, headers=API_VERSION_HEADERS)
    if more and listed:
        query = urlencode({"n": n if n is not None else len(listed), "last": listed[-1]})
        response.headers["Link"] = f'<{path}?{query}>; rel="next"'
    return response
