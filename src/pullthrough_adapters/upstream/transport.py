"""The upstream client's connections: to the addresses an AddressPolicy allows, resolved once per connection, each
read bounded by the exchange's deadline (deadlines.py)."""

from __future__ import annotations

from collections.abc import Iterable

import httpcore
import httpx

from pullthrough_adapters.upstream.addresses import AddressPolicy
from pullthrough_adapters.upstream.deadlines import DeadlineStream


def checked_http_transport(policy: AddressPolicy, limits: httpx.Limits) -> httpx.HTTPTransport:
    """An httpx transport whose connections go only to addresses `policy` allows, resolved once per connection.

    The host name still goes out as SNI and in the Host header, so TLS verification is unchanged.
    """
    ssl_context = httpx.create_ssl_context()
    transport = httpx.HTTPTransport(limits=limits, verify=ssl_context)
    # httpx builds its httpcore pool without a way to pass a network backend: build the pool it would, with ours.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_CheckedBackend(policy),
    )
    return transport


class _CheckedBackend(httpcore.NetworkBackend):
    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self._policy.resolve(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                stream = self._sockets.connect_tcp(str(address), port, timeout, local_address, socket_options)
                return DeadlineStream(stream)
            except httpcore.ConnectError as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("upstreams are reached over TCP only")

    def sleep(self, seconds: float) -> None:
        self._sockets.sleep(seconds)
