"""The TLSA lookup for one MX host, and what its answer means (RFC 7672 section 2.2).

- Secure records: DANE applies with the usable ones (none usable: TLS still required).
- No records, or records the resolver could not vouch for (no AD): no DANE.
- The lookup failed (SERVFAIL, which a validating resolver answers for a bogus
  signature, or a time-out): the host must not be used now, never a silent downgrade.
"""

from __future__ import annotations

import dns.asyncresolver

from qremote.dane.tlsa import Dane, Tlsa
from qremote.limits import DNS_MAX_TLSA
from qremote.routing.dnserrors import DnsHard, DnsSoft
from qremote.routing.dnsquery import query


def tlsa_name(host: str) -> str:
    return f"_25._tcp.{host.rstrip('.')}"


async def tlsa_state(resolver: dns.asyncresolver.Resolver, host: str, domain: str) -> Dane | None:
    name = tlsa_name(host)
    try:
        answer = await query(resolver, name, "TLSA")
    except DnsHard:
        return None
    except DnsSoft as e:
        return Dane(failure=f"the TLSA lookup for {name} failed ({e})")
    if not answer or not answer.secure:
        return None
    published = [Tlsa(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in answer][:DNS_MAX_TLSA]
    usable = tuple(r for r in published if r.usable)
    names = tuple(dict.fromkeys([host.rstrip(".").lower(), domain.rstrip(".").lower()]))
    return Dane(usable, names, found=len(published))
