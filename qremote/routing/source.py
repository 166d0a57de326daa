"""Which local address a message leaves from, and the EHLO name that goes with it.

``control/domainbindings`` (the pyropus patch): ``senderdomain:local-ip[:helo]``, looked
up like smtproutes (the full domain, then each ``.suffix``, then the ``:ip`` default line),
later lines winning. An IPv6 address is written in brackets: ``example.com:[2001:db8::25]``.
Several addresses, comma-separated (``example.com:192.0.2.10,192.0.2.11``), bind the
domain to the first; traffic shaping overflows to the next when one is at its limit.
On a domain or suffix match the EHLO name becomes the sender's domain unless a helo is
given; the default line keeps control/helohost (or its own helo). Bounces (empty sender)
use the default line. ``control/outgoingip`` is the address when no line matches.

An address that cannot be parsed, or is not configured on this host, is a control error
(``Z``) naming the line: mail never leaves silently from the operating system's choice.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from qremote.control import ControlError
from qremote.intl import idn
from qremote.routing.routes import suffixes


@dataclass(frozen=True)
class Binding:
    ip: str
    helo: str | None
    where: str
    """``control/domainbindings line N`` or ``control/outgoingip``, for messages."""
    more: tuple[str, ...] = ()
    """Further addresses, in order, that shaping may overflow to."""


@dataclass(frozen=True)
class Source:
    ip: str | None
    """Local address to bind, or None for the operating system's choice."""
    helo: str
    where: str = ""
    overflow: tuple[str, ...] = ()
    """Addresses to send from instead, in order, when ``ip`` is at a shaping limit."""

    def serves(self, remote_ip: str) -> bool:
        """Whether this source can reach that address (same address family)."""
        if self.ip is None:
            return True
        return (":" in self.ip) == (":" in remote_ip)


def _parse_ip(text: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ControlError(f"{where}: {text!r} is not an IP address") from None


def parse_bindings(lines: list[str]) -> dict[str, Binding]:
    """``domain:ip[:helo]`` lines to a map; the key is lowercase, later lines win."""
    table: dict[str, Binding] = {}
    for number, line in enumerate(lines, start=1):
        if not line or line.startswith("#"):
            continue
        where = f"control/domainbindings line {number}"
        key, sep, rest = line.partition(":")
        if not sep:
            raise ControlError(f"{where}: no ':' in {line!r}")
        try:
            addresses, helo = _split_addresses(rest)
        except ValueError as e:
            raise ControlError(f"{where}: {e}") from None
        if helo and not (helo.isascii() and helo.isprintable()):
            raise ControlError(f"{where}: {helo!r} is not a host name (not printable ASCII)")
        ips = [_parse_ip(a.strip(), where) for a in addresses]
        if len({":" in ip for ip in ips}) > 1:
            raise ControlError(f"{where}: its addresses are not all IPv4 or all IPv6")
        table[key.strip().lower()] = Binding(ips[0], helo or None, where, tuple(ips[1:]))
    return table


def _split_addresses(rest: str) -> tuple[list[str], str]:
    """``ip[,ip...][:helo]`` (each IPv6 address bracketed) to (addresses, helo)."""
    addresses: list[str] = []
    while True:
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                raise ValueError("unclosed '['")
            addresses.append(rest[1:end])
            rest = rest[end + 1 :]
            if rest and rest[0] not in ",:":
                raise ValueError("something other than ':' or ',' after ']'")
        else:
            cut = min((i for i in (rest.find(","), rest.find(":")) if i >= 0), default=len(rest))
            addresses.append(rest[:cut])
            rest = rest[cut:]
        if not rest.startswith(","):
            return addresses, rest[1:]
        rest = rest[1:]


def sender_domain(sender: bytes) -> str | None:
    """The envelope sender's domain as the bindings are looked up by: whatever follows the
    last ``@``, lowercased. Lenient on purpose, unlike ``signing.choose.domain_of`` (which
    signs only for a domain that is one): a binding must hold for any sender qmail sends."""
    if b"@" not in sender:
        return None
    text = sender.rsplit(b"@", 1)[1].decode("utf-8", "surrogateescape").strip().rstrip(".")
    # An IDN is looked up (and named in EHLO) by its A-label form.
    domain = idn.key(text)
    return domain or None


def source_for(
    sender: bytes, bindings: dict[str, Binding], outgoing_ip: str | None, helo: str
) -> Source:
    """The source for one message (pure: no check that the address is ours)."""
    domain = sender_domain(sender)
    keys = suffixes(domain) if domain else [""]
    for key in keys:
        binding = bindings.get(key)
        if binding is None:
            continue
        if binding.helo:
            name = binding.helo
        elif key and domain and domain.isascii():
            name = domain
        else:
            name = helo
        return Source(binding.ip, name, binding.where, binding.more)
    if outgoing_ip:
        return Source(outgoing_ip, helo, "control/outgoingip")
    return Source(None, helo)


def check_local(source: Source) -> None:
    """Raise ControlError unless every address (overflow ones too) can be bound here."""
    for ip in (source.ip, *source.overflow) if source.ip is not None else ():
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((ip, 0))
        except OSError as e:
            raise ControlError(
                f"{source.where}: {ip} is not an address of this host ({e.strerror})"
            ) from None


def parse_outgoing_ip(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    return _parse_ip(value.strip(), "control/outgoingip")
