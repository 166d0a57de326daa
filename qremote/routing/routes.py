"""control/smtproutes, as qmail-remote reads it (pure functions).

``domain:relay[:port]``; the lookup tries the full host, then each ``.suffix`` (with its
leading dot), then the empty key (a ``:relay`` line: the default route). An empty relay
means "use MX as usual". An IPv6 relay is written in brackets: ``example.com:[::1]:2525``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PORT = 25


@dataclass(frozen=True)
class Route:
    relay: str
    """Host name or IP literal (no brackets) to connect to, without an MX lookup."""
    port: int = DEFAULT_PORT


class RouteError(ValueError):
    """An smtproutes line that cannot be used; the text names it."""


def suffixes(host: str) -> list[str]:
    """qmail's walk: ``a.b.c``, ``.b.c``, ``.c``, then the empty default key."""
    keys = [host]
    for i, ch in enumerate(host):
        if ch == ".":
            keys.append(host[i:])
    keys.append("")
    return keys


def lookup(host: str, routes: dict[str, str]) -> str | None:
    """The value of the first matching key in qmail's order, or None."""
    for key in suffixes(host.lower()):
        if key in routes:
            return routes[key]
    return None


def parse_relay(value: str) -> Route | None:
    """``relay[:port]`` to a Route; empty relay means no route (use MX)."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise RouteError(f"control/smtproutes: unclosed '[' in {value!r}")
        relay, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise RouteError(f"control/smtproutes: junk after ']' in {value!r}")
        port_text = rest[1:]
    else:
        relay, _, port_text = value.partition(":")
    if not relay:
        return None
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise RouteError(f"control/smtproutes: bad port {port_text!r} for relay {relay!r}")
        port = int(port_text)
    return Route(relay, port)


def route_for(host: str, routes: dict[str, str]) -> Route | None:
    value = lookup(host, routes)
    if value is None:
        return None
    return parse_relay(value)
