"""TXT look-ups for key records, with one time budget for the whole message.

A DNS storm must not hold a connection open for minutes: every query gets what is left of
the message's budget, and once it is spent the remaining look-ups fail at once as
temporary errors. In the verifying daemon the answers are also kept across messages
(``dnscache.KeyCache``), for as long as their TTLs say.
"""

from __future__ import annotations

import time

import dns.exception
import dns.message
import dns.nameserver
import dns.rdatatype
import dns.resolver

from qremote.verify.dnscache import KeyCache


class DnsTemporary(Exception):
    """The key record could not be fetched now (time-out, SERVFAIL, budget spent)."""


class Records:
    """A look-up that answers from a dictionary of key records by name, never the
    network (verifyd's warm-up verifies a message it signed itself this way)."""

    def __init__(self, records: dict[str, bytes]) -> None:
        self.records = records
        self.deadline = time.monotonic() + 60

    def txt(self, name: str) -> bytes | None:
        return self.records.get(name.lower().rstrip("."))


class TxtLookup:
    def __init__(
        self,
        servers: list[tuple[str, int]],
        budget: float,
        cache: KeyCache | None = None,
        since: float | None = None,
    ) -> None:
        """``since``: when the message's budget started (the daemon counts the time a
        message waited for a worker); now when not given."""
        self.servers = servers
        self.resolver: dns.resolver.Resolver | None = None
        """Made at the first query: in verifyd most messages find their keys kept."""
        self.deadline = (time.monotonic() if since is None else since) + budget
        self.shared = cache
        self.cache: dict[str, bytes | None] = {}
        """One message's answers: DKIM and DomainKeys often share a selector."""

    def txt(self, name: str) -> bytes | None:
        """The record's strings joined, None when the name or record does not exist."""
        key = name.lower().rstrip(".")
        if key not in self.cache:
            known, record = self.shared.get(key) if self.shared is not None else (False, None)
            if not known:
                record, ttl = self._fetch(name)
                if self.shared is not None:
                    self.shared.put(key, record, ttl)
            self.cache[key] = record
        return self.cache[key]

    def _resolver(self) -> dns.resolver.Resolver:
        """This message's resolver (its time-outs are the message's own)."""
        if self.resolver is None:
            if self.servers:
                self.resolver = dns.resolver.Resolver(configure=False)
                self.resolver.nameservers = [
                    dns.nameserver.Do53Nameserver(ip, p) for ip, p in self.servers
                ]
            else:
                self.resolver = dns.resolver.Resolver()
        return self.resolver

    def _fetch(self, name: str) -> tuple[bytes | None, float]:
        """(record or None, seconds it may be kept)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DnsTemporary("time budget for DNS spent")
        try:
            resolver = self._resolver()  # no resolv.conf: a DNSException, as a time-out
            resolver.lifetime = left
            resolver.timeout = min(left, 3.0)
            answer = resolver.resolve(name, "TXT", search=False)
        except dns.resolver.NXDOMAIN as e:
            return None, negative_ttl(e.response(e.qnames()[0]))
        except dns.resolver.NoAnswer as e:
            return None, negative_ttl(e.response())
        except dns.exception.DNSException as e:
            raise DnsTemporary(f"{name}: {e.__class__.__name__}") from None
        records = [b"".join(r.strings) for r in answer]
        ttl = answer.rrset.ttl if answer.rrset is not None else 0
        return (records[0] if records else None), ttl


def negative_ttl(response: dns.message.Message | None) -> float:
    """How long "no such record" may be believed (RFC 2308 section 5): the SOA's TTL or
    its MINIMUM field, whichever is less; 0 (not kept) without an SOA."""
    if response is None:
        return 0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return min(rrset.ttl, rrset[0].minimum)
    return 0
