"""Loopback ports and readiness checks for the servers a test starts."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request

# Ignore any *_proxy variables: every server a test talks to is on this machine.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it, so parallel runs don't clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float = 15.0) -> None:
    """Poll `url` until any HTTP response arrives (an error status counts: the server is up).

    Raises TimeoutError if nothing answers within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _DIRECT.open(url, timeout=1.0):
                return
        except urllib.error.HTTPError as err:
            err.close()
            return
        except (OSError, http.client.HTTPException):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no HTTP response from {url} within {timeout} s") from None
            time.sleep(0.05)
