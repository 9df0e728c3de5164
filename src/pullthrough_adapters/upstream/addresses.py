"""Where the upstream client may connect: public addresses only, unless private ones are explicitly allowed.

A cache that fetches whatever URL a rule (or an upstream's redirect, or its token realm) names could otherwise be
turned against the network it runs in: the cloud metadata service (169.254.169.254, fd00:ec2::254), loopback,
private ranges. Every hop is checked: the rule's upstream, each redirect, each token realm.

Host names are checked where the connection is made, on the very addresses it dials (`checked_http_transport`):
checking a name first and letting the connection resolve it again would let a DNS answer that changes in between
(DNS rebinding) reach a private address. Behind a proxy from the environment, which dials for us, names are
checked before each request instead.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import urllib.request
from collections.abc import Iterable
from urllib.parse import urlsplit

import httpcore
import httpx

from core.errors import Denied
from pullthrough_adapters.upstream.deadlines import DeadlineStream

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressForbidden(Denied):
    default_message = "the upstream address is not allowed"


class AddressPolicy:
    def __init__(self, allow_private: bool = False) -> None:
        self.allow_private = allow_private

    def allows(self, address: IPAddress) -> bool:
        return self.allow_private or (address.is_global and not address.is_multicast)

    def check(self, url: str) -> None:
        """Before a request: the scheme, and the host when it is an address. A name is checked where the connection
        is made, unless an HTTP(S)_PROXY from the environment will make it: then here, the best that can be done."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AddressForbidden(f"only http(s) upstreams are allowed, not {parts.scheme or url[:20]!r}")
        literal = _literal_address(parts.hostname)
        if literal is not None and not self.allows(literal):
            raise AddressForbidden(f"upstream host {parts.hostname} is a non-public address")
        if literal is None and not self.allow_private and _proxied(parts.scheme, parts.hostname):
            with contextlib.suppress(OSError):  # unresolvable here: the proxy reports it
                self.resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to dial for `host`; refused when any of them is not allowed. OSError when unresolvable."""
        literal = _literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
        if not all(self.allows(address) for address in addresses):
            raise AddressForbidden(f"upstream host {host} resolves to a non-public address")
        return addresses


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


def _proxied(scheme: str, host: str) -> bool:
    """Whether httpx (trusting the environment, as it does by default) sends requests for `host` via a proxy."""
    proxies = urllib.request.getproxies()
    return bool(proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host)


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
