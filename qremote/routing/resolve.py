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
from qremote.limits import DNS_MAX_MX_HOSTS, DNS_MAX_TARGETS, DNS_TOTAL, DNS_TRY
from qremote.routing.addresses import ip_literal
from qremote.routing.dnserrors import DnsHard, DnsSoft, NullMx
from qremote.routing.mx import Target, order


def make_resolver(
    servers: list[tuple[str, int]], timeout_connect: int = 60, timeout_remote: int = 1200
) -> dns.asyncresolver.Resolver:
    """A resolver on the given (ip, port) servers, else on /etc/resolv.conf.

    A query waits at most :data:`~qremote.limits.DNS_TRY` seconds (less when
    ``timeoutconnect`` is shorter) and a lookup at most :data:`~qremote.limits.DNS_TOTAL`
    (less when ``timeoutremote`` is): an administrator who shortened qmail's time-outs
    shortened every wait of a delivery."""
    if not servers:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers]
    resolver.timeout = max(1.0, min(DNS_TRY, float(timeout_connect)))
    resolver.lifetime = max(1.0, min(DNS_TOTAL, float(timeout_remote)))
    # EDNS0 with DO: a validating resolver then says (AD) which answers DNSSEC secured.
    resolver.use_edns(0, dns.flags.DO, 1232)
    return resolver


def on_loopback(resolver: dns.asyncresolver.Resolver) -> bool:
    """Is every server this resolver asks on loopback? Only such a resolver's AD bit is
    believed (RFC 7672 leaves validation to a resolver the client can trust: the path to
    any other one could forge it)."""
    import ipaddress

    servers = [getattr(n, "address", n) for n in resolver.nameservers]
    try:
        return bool(servers) and all(ipaddress.ip_address(str(a)).is_loopback for a in servers)
    except ValueError:
        return False


class _Answer(list):
    """Records, and what the resolver said about them."""

    secure: bool = False
    canonical: str = ""


def _secure(response: object) -> bool:
    flags = getattr(response, "flags", 0)
    return bool(flags & dns.flags.AD)


async def query(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> _Answer:
    """Records of one type; [] for no data; DnsHard / DnsSoft for failures. The result
    says whether the resolver set AD, and the name the records belong to (after CNAMEs)."""
    result = _Answer()
    try:
        answer = await resolver.resolve(name, rdtype, search=False)
    except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel):
        raise DnsHard(name) from None  # no such name can exist: bounce, as for NXDOMAIN
    except dns.resolver.NXDOMAIN:
        raise DnsHard(name) from None
    except dns.resolver.NoAnswer as e:
        result.secure = _secure(e.kwargs.get("response"))
        return result
    except dns.exception.DNSException as e:
        raise DnsSoft(f"{name}/{rdtype}: {e.__class__.__name__}") from None
    result.extend(answer)
    result.secure = _secure(answer.response)
    result.canonical = answer.canonical_name.to_text(omit_final_dot=True)
    return result


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
    from qremote.dane.lookup import tlsa_state

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
