"""Addresses written as text: IP literals in host names and routes, name servers in
control/nameservers. Pure, and free of dnspython."""

from __future__ import annotations

import ipaddress

from qremote.control import ControlError
from qremote.routing.routes import split_host


def ip_literal(text: str) -> str | None:
    """``1.2.3.4``, ``::1``, ``[1.2.3.4]`` or ``[IPv6:::1]`` to the address, else None."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if text.lower().startswith("ipv6:"):
            text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_nameserver(text: str) -> tuple[str, int]:
    """A control/nameservers line: ``ip``, ``ip:port`` or ``[ipv6]:port``."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("[") or text.count(":") == 1:  # else a bare IPv6 address
        try:
            host, port_text = split_host(text)
        except ValueError as e:
            raise ControlError(f"control/nameservers: {e}") from None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ControlError(f"control/nameservers: {text!r} is not an IP address") from None
    if not port_text:
        return host, 53
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ControlError(f"control/nameservers: bad port in {text!r}")
    return host, int(port_text)
