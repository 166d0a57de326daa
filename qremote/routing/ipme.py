"""This host's own addresses, for the MX self-check (qmail's ipme).

qmail asks the kernel for interface addresses; on Linux the complete list, secondary
addresses included, is in /proc/net/fib_trie (IPv4) and /proc/net/if_inet6 (IPv6).
``control/moreipme`` adds addresses (for NAT) and ``control/notipme`` removes some, as in
the moreipme patch many qmail installations carry.
"""

from __future__ import annotations

import ipaddress

from qremote.control import ControlDir


def _ipv4_local(fib_trie: str) -> set[str]:
    found: set[str] = set()
    last: str | None = None
    for raw in fib_trie.splitlines():
        line = raw.strip()
        if line.startswith("|--"):
            last = line[3:].strip()
        elif line == "/32 host LOCAL" and last:
            found.add(last)
    return found


def _ipv6_local(if_inet6: str) -> set[str]:
    found: set[str] = set()
    for line in if_inet6.splitlines():
        parts = line.split()
        if parts and len(parts[0]) == 32:
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(parts[0]))))
    return found


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def local_addresses(control: ControlDir) -> set[str]:
    addrs = {"0.0.0.0", "127.0.0.1", "::1"}
    addrs |= _ipv4_local(_read("/proc/net/fib_trie"))
    addrs |= _ipv6_local(_read("/proc/net/if_inet6"))
    addrs |= {_canon(a) for a in control.listing("moreipme")}
    addrs -= {_canon(a) for a in control.listing("notipme")}
    return addrs


def _canon(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return text.strip()
