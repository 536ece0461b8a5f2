"""Which hosts count as this machine's own: plain http is allowed only to them."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False
