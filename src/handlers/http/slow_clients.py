"""The local server's defence against slow clients (slowloris): uvicorn never times out a connection that has not
finished sending a request's headers, so a thousand such connections would hold every file descriptor.

Every connection must deliver a request's headers within HEADER_TIMEOUT_SECONDS of connecting (or, on a kept-alive
connection, of starting the next request); and at most MAX_WAITING connections per server process may be waiting
for headers at once: past that, the one that has waited longest is closed. A real client sends its headers in one
packet, so it is never the longest waiting. `raise_file_limit` lifts the process's descriptor limit to what the
system allows, at start-up.
"""

from __future__ import annotations

import asyncio
import resource
from collections import OrderedDict
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_SECONDS = 10.0
MAX_WAITING = 512

_waiting: OrderedDict[SlowClientGuard, None] = OrderedDict()  # this process's connections awaiting headers


class SlowClientGuard(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        if self._header_timer is not None:
            return
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._drop)
        _waiting[self] = None
        if len(_waiting) > MAX_WAITING:
            next(iter(_waiting))._drop()

    def _stop_waiting(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        _waiting.pop(self, None)

    def _drop(self) -> None:
        self._stop_waiting()
        if not self.transport.is_closing():
            self.transport.close()


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard one (a thousand slow connections must not use up 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # kept as it is: the system said no
    return soft
