"""Where the upstream client may connect: public addresses only, unless private ones are explicitly allowed.

A cache that fetches whatever URL a rule (or an upstream's redirect, or its token realm) names could otherwise be
turned against the network it runs in: the cloud metadata service (169.254.169.254, fd00:ec2::254), loopback,
private ranges. Every hop is checked: the rule's upstream, each redirect, each token realm.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from core.errors import Denied

ALLOW_PRIVATE_ENV = "PULLTHROUGH_ALLOW_PRIVATE_UPSTREAMS"


class AddressForbidden(Denied):
    default_message = "the upstream address is not allowed"


class AddressPolicy:
    def __init__(self, allow_private: bool = False) -> None:
        self.allow_private = allow_private

    def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AddressForbidden(f"only http(s) upstreams are allowed, not {parts.scheme or url[:20]!r}")
        if self.allow_private:
            return
        for address in _addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)):
            if not address.is_global or address.is_multicast:
                raise AddressForbidden(f"upstream host {parts.hostname} resolves to a non-public address")


def _addresses(host: str, port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return set()  # unresolvable: the connection attempt itself fails and is reported as unavailable
    return {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
