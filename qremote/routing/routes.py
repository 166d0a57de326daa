"""control/smtproutes and control/authsenders, as qmail-remote and the AUTH patches read
them (pure functions).

A route is ``relay[:port]``, optionally followed by credentials for SMTP AUTH in one of
the two forms sites already have:

- fehcom / sagredo: ``relay:port|user|password``. The user is what lies between the
  first and second ``|``, the password everything after the second ``|`` (so it may
  hold ``:``, spaces and ``|``).
- Tom Clegg: ``relay[:port] user password``, separated by white space (so neither may
  hold a space).

Whichever of ``|`` and white space comes first after the relay decides the form. An
empty user means no AUTH. Trailing blanks of a line are never part of a password (qmail
strips them from every control line); ``control/smtpauth`` (:mod:`qremote.relay.smtpauth`)
carries any byte.

smtproutes is looked up by the destination: the full host, then each ``.suffix`` (with
its leading dot), then the empty key (a ``:relay`` line: the default route). An empty
relay means "use MX as usual". authsenders is looked up by the envelope sender before
smtproutes: the full address, ``@domain``, then the domain's walk as above; a bounce
(empty sender) uses only the default line; an empty relay there means "smtproutes
decides". An IPv6 relay is written in brackets: ``example.com:[::1]:2525``.

No message about a route ever repeats the value of its line: it may hold a password, and
the message goes to qmail-send's log. Messages name the file and the line's key only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from qremote.intl import idn

DEFAULT_PORT = 25
SUBMISSIONS_PORT = 465
"""RFC 8314's port for message submission over implicit TLS."""


@dataclass(frozen=True)
class Credentials:
    """A user name and password for SMTP AUTH, as bytes (a control file may hold any)."""

    user: bytes
    password: bytes = field(repr=False)

    def digest(self) -> str:
        """Tells accounts apart (connection reuse) without keeping the password in a key."""
        return hashlib.sha256(self.user + b"\0" + self.password).hexdigest()[:32]


@dataclass(frozen=True)
class Route:
    relay: str
    """Host name or IP literal (no brackets) to connect to, without an MX lookup."""
    port: int = DEFAULT_PORT
    credentials: Credentials | None = None
    where: str = field(default="", compare=False)
    """The line that chose this route, for messages: ``control/smtproutes line for
    'example.com'`` (never its value)."""


class RouteError(ValueError):
    """A route line that cannot be used; the text names the file and key, never the value."""


def split_host(text: str) -> tuple[str, str]:
    """``[addr]:rest`` or ``host:rest`` to (host, rest); the colon after ']' is optional
    only when nothing follows. IPv6 addresses must be bracketed in control files, since
    ``:`` separates their fields. ValueError says what is wrong (without the text)."""
    if not text.startswith("["):
        host, _, rest = text.partition(":")
        return host, rest
    end = text.find("]")
    if end < 0:
        raise ValueError("unclosed '['")
    rest = text[end + 1 :]
    if rest and not rest.startswith(":"):
        raise ValueError("something other than ':' after ']'")
    return text[1:end], rest[1:]


def suffixes(host: str) -> list[str]:
    """qmail's walk: ``a.b.c``, ``.b.c``, ``.c``, then the empty default key."""
    keys = [host]
    for i, ch in enumerate(host):
        if ch == ".":
            keys.append(host[i:])
    keys.append("")
    return keys


def sender_keys(sender: str) -> list[str]:
    """authsenders' walk: the address, ``@domain``, the domain's suffix walk; a bounce
    (empty sender) has only the default key."""
    if not sender:
        return [""]
    sender = idn.key(sender.lower())  # the domain in its A-label form, as the keys are
    local, at, domain = sender.rpartition("@")
    if not at:
        return [sender, *suffixes(sender)]
    return [sender, "@" + domain, *suffixes(domain)]


def _first(keys: list[str], table: dict[str, str]) -> tuple[str, str] | None:
    for key in keys:
        if key in table:
            return key, table[key]
    return None


def describe(file: str, key: str) -> str:
    """How messages name a line: by its key, which is a domain or address, never secret."""
    if not key:
        return f"control/{file} default line"
    return f"control/{file} line for {key!r}"


def _split_credentials(value: str, where: str) -> tuple[str, Credentials | None]:
    """``relay[:port]`` and the credentials after it, in either patch's form."""
    bar = value.find("|")
    blank = next((i for i, c in enumerate(value) if c in " \t"), -1)
    if bar >= 0 and (blank < 0 or bar < blank):
        hostport, rest = value[:bar], value[bar + 1 :]
        user, sep, password = rest.partition("|")
        if not sep:
            raise RouteError(f"{where}: a user but no second '|' before the password")
        return hostport, _credentials(user, password)
    if blank >= 0:
        hostport, words = value[:blank], value[blank:].split()
        if len(words) != 2:
            raise RouteError(
                f"{where}: after the relay, 'user password' (two words) was expected, "
                f"not {len(words)} words"
            )
        return hostport, _credentials(words[0], words[1])
    return value, None


def _credentials(user: str, password: str) -> Credentials | None:
    if not user:
        return None
    raw = "surrogateescape"
    return Credentials(user.encode("utf-8", raw), password.encode("utf-8", raw))


def parse_route(value: str, where: str = "control/smtproutes") -> Route | None:
    """One route's value to a Route; None when its relay is empty (use MX). Blanks
    before the relay are not part of it."""
    hostport, credentials = _split_credentials(value.lstrip(" \t"), where)
    try:
        relay, port_text = split_host(hostport)
    except ValueError as e:
        raise RouteError(f"{where}: {e}") from None
    if not relay:
        if credentials is not None:
            raise RouteError(f"{where}: credentials but no relay")
        return None
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise RouteError(f"{where}: the port is not a number from 1 to 65535")
        port = int(port_text)
    return Route(relay, port, credentials, where)


def route_for(
    host: str, routes: dict[str, str], sender: str = "", senders: dict[str, str] | None = None
) -> Route | None:
    """The relay for a delivery: authsenders by the sender first, then smtproutes by
    the destination; None means MX. RouteError names a line that cannot be used."""
    if senders:
        found = _first(sender_keys(sender), senders)
        if found is not None:
            route = parse_route(found[1], describe("authsenders", found[0]))
            if route is not None:
                return route
    found = _first(suffixes(host.lower()), routes)
    if found is None:
        return None
    return parse_route(found[1], describe("smtproutes", found[0]))
