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

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

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
    return resolver


async def _query(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list:
    """Records of one type; [] for no data; DnsHard / DnsSoft for failures."""
    try:
        answer = await resolver.resolve(name, rdtype, search=False)
    except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel):
        raise DnsHard(name) from None  # no such name can exist: bounce, as for NXDOMAIN
    except dns.resolver.NXDOMAIN:
        raise DnsHard(name) from None
    except dns.resolver.NoAnswer:
        return []
    except dns.exception.DNSException as e:
        raise DnsSoft(f"{name}/{rdtype}: {e.__class__.__name__}") from None
    return list(answer)


async def addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    """A then AAAA addresses of one host (IPv4 first: most qmail hosts are IPv4 first)."""
    ip = ip_literal(name)
    if ip is not None:
        return [ip]
    results = await asyncio.gather(
        _query(resolver, name, "A"), _query(resolver, name, "AAAA"), return_exceptions=True
    )
    found: list[str] = []
    errors: list[BaseException] = []
    for result in results:
        if isinstance(result, BaseException):
            errors.append(result)
        else:
            found.extend(r.address for r in result)
    if found:
        return found
    if any(isinstance(e, DnsSoft) for e in errors):
        raise next(e for e in errors if isinstance(e, DnsSoft))
    if errors and all(isinstance(e, DnsHard) for e in errors):
        raise errors[0]
    for e in errors:
        if not isinstance(e, (DnsHard, DnsSoft)):
            raise e
    return []


async def mx_targets(
    resolver: dns.asyncresolver.Resolver, host: str, rng: random.Random
) -> list[Target]:
    """qmail's dns_mxip: the addresses to try for a domain, best first."""
    records = await _query(resolver, host, "MX")
    if not records:
        return [Target(a, 0, host) for a in await addresses(resolver, host)][:DNS_MAX_TARGETS]
    exchangers = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in records]
    if len(exchangers) == 1 and exchangers[0][1] in ("", "."):
        raise NullMx(host)
    ordered = [(pref, name) for pref, name in order(exchangers, rng) if name not in ("", ".")]
    ordered = ordered[:DNS_MAX_MX_HOSTS]
    found = await asyncio.gather(
        *(addresses(resolver, name) for _, name in ordered), return_exceptions=True
    )
    targets: list[Target] = []
    soft: DnsSoft | None = None
    for (pref, name), result in zip(ordered, found, strict=True):
        if isinstance(result, DnsHard):
            continue
        if isinstance(result, DnsSoft):
            soft = result
            continue
        if isinstance(result, BaseException):
            raise result
        targets.extend(Target(a, pref, name) for a in result)
    if not targets and soft is not None:
        raise soft
    return targets[:DNS_MAX_TARGETS]


async def relay_targets(resolver: dns.asyncresolver.Resolver, relay: str) -> list[Target]:
    """An smtproutes relay: addresses of that one host, no MX lookup."""
    return [Target(a, 0, relay) for a in await addresses(resolver, relay)][:DNS_MAX_TARGETS]
