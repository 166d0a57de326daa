"""TXT look-ups for key records, with one time budget for the whole message.

A DNS storm must not hold a connection open for minutes: every query gets what is left of
the message's budget, and once it is spent the remaining look-ups fail at once as
temporary errors.
"""

from __future__ import annotations

import time

import dns.exception
import dns.nameserver
import dns.resolver


class DnsTemporary(Exception):
    """The key record could not be fetched now (time-out, SERVFAIL, budget spent)."""


class TxtLookup:
    def __init__(self, servers: list[tuple[str, int]], budget: float) -> None:
        if servers:
            self.resolver = dns.resolver.Resolver(configure=False)
            self.resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, p) for ip, p in servers]
        else:
            self.resolver = dns.resolver.Resolver()
        self.deadline = time.monotonic() + budget
        self.cache: dict[str, bytes | None] = {}
        """One message's answers: DKIM and DomainKeys often share a selector."""

    def txt(self, name: str) -> bytes | None:
        """The record's strings joined, None when the name or record does not exist."""
        key = name.lower().rstrip(".")
        if key not in self.cache:
            self.cache[key] = self._fetch(name)
        return self.cache[key]

    def _fetch(self, name: str) -> bytes | None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DnsTemporary("time budget for DNS spent")
        self.resolver.lifetime = left
        self.resolver.timeout = min(left, 3.0)
        try:
            answer = self.resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as e:
            raise DnsTemporary(f"{name}: {e.__class__.__name__}") from None
        records = [b"".join(r.strings) for r in answer]
        return records[0] if records else None
