"""Limits on what a request may be, checked before any routing: a long URL, huge or too many headers, or a
repeated header that must be unique end in a 4xx OCI error, never in work or a 500."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from core.errors import HeadersTooLarge, NameInvalid, RegistryError, TargetTooLong

MAX_TARGET_BYTES = 4096  # a repository name is at most 255 characters; a digest 135
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
UNIQUE_HEADERS = (b"authorization", b"host", b"range", b"content-length")


class RequestLimits:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _problem(scope)
            if problem is not None:
                await _refuse(send, problem, head=scope["method"] == "HEAD")
                return
        await self._app(scope, receive, send)


def _problem(scope: Scope) -> RegistryError | None:
    raw_path = scope.get("raw_path") or scope["path"].encode()
    if len(raw_path) + len(scope.get("query_string", b"")) > MAX_TARGET_BYTES:
        return TargetTooLong(f"request target longer than {MAX_TARGET_BYTES} bytes")
    if b"%2f" in raw_path.lower() or b"%5c" in raw_path.lower():  # no OCI name needs an encoded (back)slash
        return NameInvalid("encoded slashes are not allowed in the path")
    headers = scope["headers"]
    if len(headers) > MAX_HEADERS or sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES:
        return HeadersTooLarge(f"more than {MAX_HEADERS} headers or {MAX_HEADER_BYTES} bytes of them")
    names = [name.lower() for name, _ in headers]
    for unique in UNIQUE_HEADERS:
        if names.count(unique) > 1:
            return HeadersTooLarge(f"the {unique.decode()} header appears more than once")
    return None


async def _refuse(send: Send, error: RegistryError, *, head: bool) -> None:
    body = json.dumps(error.to_body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"docker-distribution-api-version", b"registry/2.0")]  # fmt: skip
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
