"""`pullthrough serve --lambda`: the deployed code path, run here, a development tool.

Each HTTP request becomes an API Gateway HTTP API (payload format 2.0) event for the registry function's handler,
built as the function builds it, and its answer becomes the HTTP response, the way `sam local start-api` would do it,
without Docker. A blob handed over to the fill function runs the fill function's handler in a thread. S3 and
DynamoDB are whatever AWS_ENDPOINT_URL points at (moto in server mode, in tests).
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from core.ports import FillJob
from core.rules import RuleSet
from handlers.settings import AwsSettings
from pullthrough_adapters.aws.dispatch import fill_event

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class LocalContext:
    """What Powertools reads from a Lambda context."""

    function_name: str = "pullthrough-local"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:pullthrough-local"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/pullthrough-local"
    log_stream_name: str = "local"
    deadline: float = field(default_factory=lambda: time.monotonic() + 29)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def http_api_event(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 event: lower-case header names, repeated headers joined by commas."""
    parts = urlsplit(target)
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    # API Gateway tells the function how the client connected; here that is plain HTTP
    joined.setdefault("x-forwarded-proto", "http")
    request_id = str(uuid.uuid4())
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": joined,
        "requestContext": {
            "accountId": "000000000000", "apiId": "local", "domainName": joined.get("host", "localhost"),
            "domainPrefix": "local", "requestId": request_id, "routeKey": "$default", "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()), "timeEpoch": int(time.time() * 1000),
            "http": {"method": method, "path": parts.path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": joined.get("user-agent", "")},
        },
        "body": base64.b64encode(body).decode() if body else None,
        "isBase64Encoded": bool(body),
    }  # fmt: skip


def _ensure_event_loop() -> None:
    """Each request thread plays one Lambda instance; Mangum expects the instance's thread to have a loop."""
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


class ThreadDispatcher:
    """Starts the fill function's handler in a thread, as Lambda would start the function."""

    def __init__(self, fill: LambdaHandler) -> None:
        self._fill = fill

    def dispatch(self, job: FillJob, lease_owner: str) -> None:
        context = LocalContext(function_name="pullthrough-fill-local", deadline=time.monotonic() + 900)
        threading.Thread(target=self._fill, args=(fill_event(job, lease_owner), context), daemon=True).start()


def run(settings: AwsSettings, rules: RuleSet | None, host: str, port: int, log_level: str) -> None:
    """Prepare the table, bucket and signing secret as the template would, store `rules`, and serve the registry
    function's handler on host:port."""
    # Powertools reads its configuration from the environment, as on Lambda, when its objects are created.
    os.environ.update({
        "POWERTOOLS_SERVICE_NAME": "pullthrough", "POWERTOOLS_METRICS_NAMESPACE": "Pullthrough",
        "POWERTOOLS_LOG_LEVEL": log_level.upper(), "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
    })  # fmt: skip
    from handlers.composition.aws import ensure_resources, ensure_signing_secret, fill_handler, store_rules
    from handlers.composition.aws_http import registry_handler

    ensure_resources(settings)
    if settings.auth == "token":
        settings = replace(
            settings, signing_keys_secret=ensure_signing_secret(settings, f"{settings.table}-signing-keys")
        )
    if rules is not None:
        store_rules(settings, rules)
    handler = registry_handler(settings, ThreadDispatcher(fill_handler(settings)))  # as at a cold start
    serve(handler, host, port)


def serve(handler: LambdaHandler, host: str, port: int) -> None:
    class Gateway(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: without, a keep-alive client waits
        # for its delayed ACK, 40 ms a response

        def _invoke(self) -> None:
            _ensure_event_loop()
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            event = http_api_event(self.command, self.path, list(self.headers.items()), body, self.client_address[0])
            answer = handler(event, LocalContext())
            payload = answer.get("body") or ""
            data = base64.b64decode(payload) if answer.get("isBase64Encoded") else payload.encode()
            self.send_response(answer["statusCode"])
            headers = {name.lower(): value for name, value in (answer.get("headers") or {}).items()}
            headers.setdefault("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _invoke

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the handler logs each request itself, as structured JSON

    server = http.server.ThreadingHTTPServer((host, port), Gateway)
    server.daemon_threads = True
    server.serve_forever()
