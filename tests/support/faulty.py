"""A fault-injecting upstream: a proxy in front of a real registry that misbehaves on purpose, the way upstreams do.

It forwards every request (Range included) to the registry behind it, and, as a test configures it: cuts each blob
download short once, answers 503 to a share of requests, hangs, drip-feeds bodies, answers 500 for one name, serves
a hand-written answer for a path, or announces a body far larger than it sends. It counts what it is asked.
"""

from __future__ import annotations

import http.client
import http.server
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .ports import free_port

_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[a-f0-9]{64})$")
_CHUNK = 64 * 1024


@dataclass
class Faults:
    cut_blobs_once: bool = False  # each blob's first GET stops half-way, the connection closed
    unavailable_every: int = 0  # every n-th request gets 503 (no Retry-After)
    hang_paths: str | None = None  # a regular expression: matching requests get no answer until released
    drip_paths: str | None = None  # matching GETs send their body one byte every `drip_seconds`
    drip_seconds: float = 1.0
    error_paths: str | None = None  # matching requests get a 500
    slow_body_paths: str | None = None  # matching bodies come in 64 KiB pieces `slow_body_seconds` apart
    slow_body_seconds: float = 0.05
    # path -> (status, headers, body): answered by hand instead of forwarding
    canned: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    endless_paths: str | None = None  # matching GETs: a chunked body that never ends
    # blob GETs are redirected to a "presigned" URL on this proxy carrying this signature, as Docker Hub's CDN does
    signed_redirect: str | None = None


class FaultyUpstream:
    def __init__(self, registry_url: str) -> None:
        self.faults = Faults()
        self.requests: Counter[str] = Counter()  # "METHOD path"
        self.ranges: list[str] = []  # Range headers it was sent
        self._target = urlsplit(registry_url)
        self._cut: set[str] = set()
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyUpstream:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def forget_cuts(self) -> None:
        """Cut every blob once more."""
        with self._lock:
            self._cut.clear()

    def release(self) -> None:
        """Let hanging requests go (they are answered 503)."""
        self._released.set()

    def count(self, method: str, pattern: str) -> int:
        return sum(n for key, n in self.requests.items() if key.startswith(method + " ") and re.search(pattern, key))

    # -- the proxy --------------------------------------------------------------------------------------------------

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                upstream._serve(self)

            do_HEAD = do_GET

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def _serve(self, request: http.server.BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        faults = self.faults
        with self._lock:
            self.requests[f"{request.command} {path}"] += 1
            if request.headers.get("Range"):
                self.ranges.append(request.headers["Range"])
            unlucky = faults.unavailable_every > 0 and sum(self.requests.values()) % faults.unavailable_every == 0
        if path.startswith("/_signed/"):  # the target of a signed redirect: the blob itself
            return self._forward(request, path.removeprefix("/_signed"))
        if faults.signed_redirect and _BLOB.match(path) and request.command == "GET":
            location = f"{self.url}/_signed{path}?X-Amz-Signature={faults.signed_redirect}&X-Amz-Expires=60"
            return _answer(request, 307, {"Location": location}, b"")
        if path in faults.canned:
            status, headers, body = faults.canned[path]
            return _answer(request, status, headers, body)
        if faults.hang_paths and re.search(faults.hang_paths, path):
            self._released.wait()
            return _answer(request, 503, {}, b"")
        if faults.error_paths and re.search(faults.error_paths, path):
            return _answer(request, 500, {}, b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}')
        if unlucky:
            return _answer(request, 503, {}, b'{"errors":[{"code":"UNAVAILABLE","message":"try again"}]}')
        if faults.endless_paths and re.search(faults.endless_paths, path) and request.command == "GET":
            return _endless(request)
        self._forward(request, path)

    def _forward(self, request: http.server.BaseHTTPRequestHandler, path: str) -> None:
        connection = http.client.HTTPConnection(self._target.hostname, self._target.port, timeout=60)
        headers = {name: value for name, value in request.headers.items() if name.lower() not in ("host", "connection")}
        query = request.path.partition("?")[2] if not request.path.startswith("/_signed/") else ""
        connection.request(request.command, path + (f"?{query}" if query else ""), headers=headers)
        answer = connection.getresponse()
        request.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                request.send_header(name, value)
        request.end_headers()
        if request.command == "HEAD":
            connection.close()
            return
        faults = self.faults
        blob = _BLOB.match(path)
        limit: int | None = None
        pause = 0.0
        piece = _CHUNK
        with self._lock:
            if faults.cut_blobs_once and blob and answer.status == 200 and blob["digest"] not in self._cut:
                self._cut.add(blob["digest"])
                limit = int(answer.getheader("Content-Length") or 2) // 2
        if faults.drip_paths and re.search(faults.drip_paths, path):
            pause, piece = faults.drip_seconds, 1
        elif faults.slow_body_paths and re.search(faults.slow_body_paths, path):
            pause = faults.slow_body_seconds
        _relay(request, answer, limit, pause, piece)
        connection.close()


def _relay(
    request: http.server.BaseHTTPRequestHandler, answer: http.client.HTTPResponse, limit: int | None, pause: float,
    piece: int,
) -> None:  # fmt: skip
    sent = 0
    try:
        while True:
            data = answer.read(piece)
            if not data:
                return
            if limit is not None and sent + len(data) > limit:
                request.wfile.write(data[: limit - sent])
                request.wfile.flush()
                request.close_connection = True
                request.connection.shutdown(2)  # cut: the client sees the connection end mid-body
                return
            request.wfile.write(data)
            request.wfile.flush()
            sent += len(data)
            if pause:
                time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError, OSError):
        request.close_connection = True


def _answer(request: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
    """A hand-written answer; its Content-Length may claim more than the body has (then the connection ends)."""
    request.send_response(status)
    for name, value in headers.items():
        request.send_header(name, value)
    if not any(name.lower() == "content-length" for name in headers):
        request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)
    request.close_connection = True


def _endless(request: http.server.BaseHTTPRequestHandler) -> None:
    request.send_response(200)
    request.send_header("Content-Type", "application/octet-stream")
    request.send_header("Transfer-Encoding", "chunked")
    request.end_headers()
    piece = b"\0" * _CHUNK
    try:
        while True:
            request.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    except (BrokenPipeError, ConnectionResetError, OSError):
        request.close_connection = True
