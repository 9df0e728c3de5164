"""Where the upstream client may connect: public addresses only, unless private ones are explicitly allowed.

A cache that fetches whatever URL a rule (or an upstream's redirect, or its token realm) names could otherwise be
turned against the network it runs in: the cloud metadata service (169.254.169.254, fd00:ec2::254), loopback,
private ranges. Every hop is checked: the rule's upstream, each redirect, each token realm.

Host names are checked where the connection is made, on the very addresses it dials (transport.py):
checking a name first and letting the connection resolve it again would let a DNS answer that changes in between
(DNS rebinding) reach a private address. Behind a proxy from the environment, which dials for us, names are
checked before each request instead.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import urllib.request
from urllib.parse import urlsplit

from core.errors import Denied

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


def _proxied(scheme: str, host: str) -> bool:
    """Whether httpx (trusting the environment, as it does by default) sends requests for `host` via a proxy."""
    proxies = urllib.request.getproxies()
    return bool(proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host)


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
