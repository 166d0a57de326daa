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


def split_host(text: str) -> tuple[str, str]:
    """``[addr]:rest`` or ``host:rest`` to (host, rest); the colon after ']' is optional
    only when nothing follows. IPv6 addresses must be bracketed in control files, since
    ``:`` separates their fields. ValueError says what is wrong."""
    if not text.startswith("["):
        host, _, rest = text.partition(":")
        return host, rest
    end = text.find("]")
    if end < 0:
        raise ValueError(f"unclosed '[' in {text!r}")
    rest = text[end + 1 :]
    if rest and not rest.startswith(":"):
        raise ValueError(f"junk after ']' in {text!r}")
    return text[1:end], rest[1:]


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
    try:
        relay, port_text = split_host(value)
    except ValueError as e:
        raise RouteError(f"control/smtproutes: {e}") from None
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
