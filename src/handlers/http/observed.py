"""Every HTTP request, observed once its answer starts: route (the template, never the path a client sent: bounded
label values), method, status and time to the headers."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

RequestObserver = Callable[[str, str, int, float], None]  # route, method, status, seconds


class ObservedRequests:
    def __init__(self, app: ASGIApp, observe: RequestObserver) -> None:
        self._app = app
        self._observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", "unmatched")
                self._observe(route, scope["method"], message["status"], time.perf_counter() - started)
            await send(message)

        await self._app(scope, receive, observed)
