"""DNS primitives of every lookup qremote makes (delivery, MTA-STS, TLS reports, checks):
the resolver as ``control/nameservers`` and qmail's time-outs make it, whether its AD bit
can be believed, and one query mapped to qmail's outcomes (:class:`DnsHard` for a name
that cannot exist, :class:`DnsSoft` for now). The TLSA lookup sits beside it
(:mod:`qremote.routing.tlsalookup`), the MX and address logic above it
(:mod:`qremote.routing.resolve`).
"""

from __future__ import annotations

import ipaddress
from collections import Counter

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from qremote.limits import DNS_TOTAL, DNS_TRY
from qremote.routing.dnserrors import DnsHard, DnsSoft


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
    servers = [getattr(n, "address", n) for n in resolver.nameservers]
    try:
        return bool(servers) and all(ipaddress.ip_address(str(a)).is_loopback for a in servers)
    except ValueError:
        return False


LOOKUPS: Counter[tuple[str, str]] = Counter()
"""Queries made by this process, by (type, result): ``answer``, ``nodata``, ``nxdomain``
(a name that cannot exist counts as one) or ``failure``. Counted here, where every
query of a delivery is made; qremoted's ``/metrics`` reads it."""


class Answer(list):
    """Records, and what the resolver said about them."""

    secure: bool = False
    canonical: str = ""


def _secure(response: object) -> bool:
    flags = getattr(response, "flags", 0)
    return bool(flags & dns.flags.AD)


NAMES_KEPT = 10_000
"""Names kept parsed for the cache's keys (cleared when full): qremoted asks the same
few names for every delivery, and parsing one costs more than the cache lookup."""

_names: dict[str, dns.name.Name] = {}


def _qname(name: str) -> dns.name.Name:
    qname = _names.get(name)
    if qname is None:
        if len(_names) >= NAMES_KEPT:
            _names.clear()
        qname = _names[name] = dns.name.from_text(name)
    return qname


def _from_cache(
    cache: dns.resolver.Cache | dns.resolver.LRUCache, name: str, rdtype: str
) -> dns.resolver.Answer | None:
    """What the resolver's cache holds for the name, as ``resolve`` would find it there:
    an answer (``rrset`` None: no data), NXDOMAIN raised, or None (ask the servers).

    qremoted asks the same few names for every delivery: going to the cache first skips
    dnspython's resolution set-up and the exception it raises for no data, most of the
    cost of a cached lookup."""
    qname = _qname(name)
    found = cache.get((qname, dns.rdatatype.RdataType.make(rdtype), dns.rdataclass.IN))
    if found is not None:
        return found
    nx = cache.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
    if nx is not None and nx.response.rcode() == dns.rcode.NXDOMAIN:
        raise _CachedNxdomain
    return None


class _CachedNxdomain(Exception):
    """The cache holds NXDOMAIN for the name (dnspython's own exception costs more to
    make than the lookup)."""


async def query(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> Answer:
    """Records of one type; [] for no data; DnsHard / DnsSoft for failures. The result
    says whether the resolver set AD, and the name the records belong to (after CNAMEs)."""
    result = Answer()
    try:
        cache = resolver.cache
        answer = None
        if isinstance(cache, (dns.resolver.Cache, dns.resolver.LRUCache)):
            answer = _from_cache(cache, name, rdtype)
        if answer is None:
            answer = await resolver.resolve(name, rdtype, search=False)
    except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel):
        LOOKUPS[rdtype, "nxdomain"] += 1
        raise DnsHard(name) from None  # no such name can exist: bounce, as for NXDOMAIN
    except (dns.resolver.NXDOMAIN, _CachedNxdomain):
        LOOKUPS[rdtype, "nxdomain"] += 1
        raise DnsHard(name) from None
    except dns.resolver.NoAnswer as e:
        LOOKUPS[rdtype, "nodata"] += 1
        result.secure = _secure(e.kwargs.get("response"))
        return result
    except dns.exception.DNSException as e:
        LOOKUPS[rdtype, "failure"] += 1
        raise DnsSoft(f"{name}/{rdtype}: {e.__class__.__name__}") from None
    if answer.rrset is None:  # no data, as the cache holds it
        LOOKUPS[rdtype, "nodata"] += 1
        result.secure = _secure(answer.response)
        return result
    LOOKUPS[rdtype, "answer"] += 1
    result.extend(answer)
    result.secure = _secure(answer.response)
    result.canonical = answer.canonical_name.to_text(omit_final_dot=True)
    return result
