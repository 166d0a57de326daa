"""DNS for delivery with dnspython: MX with A/AAAA fallback, mapped to qmail's outcomes.

qmail's dns_mxip distinguishes three answers, and so do we: the name does not exist
(:class:`DnsHard`, a bounce), the lookup failed for now (:class:`DnsSoft`, retry later),
or a list of addresses (possibly empty: no mail exchanger, a bounce). As in qmail, a
temporary failure while looking up one MX host's address only matters if no address at
all was found.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from qremote.dane.tlsa import Dane
from qremote.limits import DNS_MAX_MX_HOSTS, DNS_MAX_TARGETS
from qremote.routing.addresses import ip_literal
from qremote.routing.dnserrors import DnsHard, DnsSoft, NullMx
from qremote.routing.dnsquery import query
from qremote.routing.mx import Target, order
from qremote.routing.tlsalookup import tlsa_state


async def addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    """A then AAAA addresses of one host (IPv4 first: most qmail hosts are IPv4 first)."""
    return (await _addresses(resolver, name))[0]


def first_address(resolver: dns.asyncresolver.Resolver) -> Callable[[str], Awaitable[str]]:
    """A host name to the first of its addresses, through ``resolver``: how the HTTPS
    client (MTA-STS policies, TLS reports) finds its server, as every lookup of ours."""

    async def resolve(host: str) -> str:
        found = await addresses(resolver, host)
        if not found:
            raise OSError(f"{host} has no address")
        return found[0]

    return resolve


async def _addresses(
    resolver: dns.asyncresolver.Resolver, name: str
) -> tuple[list[str], bool, str]:
    """The addresses, whether every answer was secure, and the name after CNAMEs."""
    ip = ip_literal(name)
    if ip is not None:
        return [ip], False, name
    results = await asyncio.gather(
        query(resolver, name, "A"), query(resolver, name, "AAAA"), return_exceptions=True
    )
    found: list[str] = []
    errors: list[BaseException] = []
    secure, canonical = True, name
    for result in results:
        if isinstance(result, BaseException):
            errors.append(result)
        else:
            found.extend(r.address for r in result)
            secure = secure and result.secure
            if result and result.canonical:
                canonical = result.canonical
    if found:
        return found, secure and not errors, canonical
    if any(isinstance(e, DnsSoft) for e in errors):
        raise next(e for e in errors if isinstance(e, DnsSoft))
    if errors and all(isinstance(e, DnsHard) for e in errors):
        raise errors[0]
    for e in errors:
        if not isinstance(e, (DnsHard, DnsSoft)):
            raise e
    return [], False, name


async def _host(
    resolver: dns.asyncresolver.Resolver, name: str, domain: str, dane: bool
) -> list[Target] | BaseException:
    """One MX host's addresses, each with what DANE says about the host (``dane``: the MX
    answer was secure and DANE is on). The TLSA lookup runs alongside the address
    lookups; it counts only if the addresses were secure too (RFC 7672 section 2.2)."""
    tlsa = asyncio.ensure_future(_tlsa(resolver, name, domain)) if dane else None
    try:
        found, secure, canonical = await _addresses(resolver, name)
    except BaseException as e:  # noqa: BLE001 - handed to the caller, as gather would
        if tlsa is not None:
            tlsa.cancel()
        return e
    state = None
    if tlsa is not None:
        state = await tlsa
        if not secure:
            state = None
        elif canonical.lower() != name.lower():
            # RFC 7672 section 2.2.2: the CNAME-expanded name's TLSA first, then the
            # original name's.
            expanded = await _tlsa(resolver, canonical, domain)
            if expanded is not None and (expanded.records or expanded.found):
                state = expanded
    return [Target(a, 0, name, state) for a in found]


async def _tlsa(resolver: dns.asyncresolver.Resolver, host: str, domain: str) -> Dane | None:
    """What DNSSEC says about TLS with ``host``: None when nothing secure is published."""
    return await tlsa_state(resolver, host, domain)


async def mx_targets(
    resolver: dns.asyncresolver.Resolver, host: str, rng: random.Random, dane: bool = False
) -> list[Target]:
    """qmail's dns_mxip: the addresses to try for a domain, best first; with ``dane``,
    each carries what DNSSEC-signed TLSA records say about its host."""
    records = await query(resolver, host, "MX")
    if not records:
        found = await _host(resolver, host, host, dane and records.secure)
        if isinstance(found, BaseException):
            raise found
        return found[:DNS_MAX_TARGETS]
    exchangers = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in records]
    if len(exchangers) == 1 and exchangers[0][1] in ("", "."):
        raise NullMx(host)
    ordered = [(pref, name) for pref, name in order(exchangers, rng) if name not in ("", ".")]
    ordered = ordered[:DNS_MAX_MX_HOSTS]
    secure = dane and records.secure
    hosts = await asyncio.gather(*(_host(resolver, name, host, secure) for _, name in ordered))
    targets: list[Target] = []
    soft: DnsSoft | None = None
    for (pref, name), result in zip(ordered, hosts, strict=True):
        if isinstance(result, DnsHard):
            continue
        if isinstance(result, DnsSoft):
            soft = result
            continue
        if isinstance(result, BaseException):
            raise result
        targets.extend(Target(t.ip, pref, name, t.dane) for t in result)
    if not targets and soft is not None:
        raise soft
    return targets[:DNS_MAX_TARGETS]


async def relay_targets(resolver: dns.asyncresolver.Resolver, relay: str) -> list[Target]:
    """An smtproutes relay: addresses of that one host, no MX lookup."""
    return [Target(a, 0, relay) for a in await addresses(resolver, relay)][:DNS_MAX_TARGETS]
