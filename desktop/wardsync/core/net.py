"""Address rules shared by every layer that decides whether a URL may carry clinical data."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str | None) -> bool:
    """True for `localhost` and loopback IP addresses (127.0.0.0/8, ::1, bracketed or not).

    Plain http/ws is allowed only to these: nothing sent there leaves the workstation.
    """
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
