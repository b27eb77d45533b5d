"""Whether a host is this machine's own: the one place that decides when plain HTTP is safe
(the agent's collector URL, the collector's webhook and SMTP, sign-in to the admin pages)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether a host name or address (IPv6 in brackets or not) is this machine's own: plain
    HTTP to it never crosses a network."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
