"""Step 2 of a delivery (docs/DESIGN.md section 3): where it goes.

The relay from ``control/authsenders`` or ``control/smtproutes`` if one matches, else the
destination's MX hosts (DANE's TLSA lookups alongside when asked for) and, beside them,
its MTA-STS policy; then qmail's checks on the list (no MX, ourselves listed as best MX)
and MTA-STS enforce's (only MX hosts the policy names). Every way it can end early is a
report from :mod:`qremote.report`.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qremote import report
from qremote.delivery.outcome import Outcome
from qremote.delivery.resources import Resources
from qremote.delivery.signature import Signature
from qremote.intl.idn import IdnError, ascii_domain
from qremote.mtasts import discover
from qremote.mtasts.apply import enforce_mx
from qremote.mtasts.discover import Found
from qremote.relay.plan import Relaying, relaying_for
from qremote.routing import routes
from qremote.routing.addresses import ip_literal
from qremote.routing.dnserrors import DnsHard, DnsSoft, NullMx
from qremote.routing.mx import Target, usable
from qremote.routing.source import Source
from qremote.settings import DaneMode, Settings

if TYPE_CHECKING:  # dnspython is imported only when a name must be looked up
    from dns.asyncresolver import Resolver as AsyncResolver

_SHUFFLE = random.Random()
"""Orders MX hosts of equal preference (as qmail's dns_mxip does, at random): one
generator for the process, seeded once; seeding one per delivery cost more than the
shuffle, and nothing about the order needs to be unpredictable."""


@dataclass(frozen=True)
class Route:
    """Where one delivery goes and how it is reached."""

    domain: str
    """The destination host as looked up (A-labels); ``[ip]`` for an address literal."""
    targets: list[Target]
    """The addresses to try, in qmail's order (usable and, under MTA-STS enforce, named)."""
    port: int
    origin: Source
    """The source address and HELO name (control/bindroutes, outgoingip, helohost)."""
    relay: Relaying | None = None
    """How to talk to the relay a route chose (AUTH, its TLS); None for MX delivery."""
    sts: Found | None = None
    """The domain's MTA-STS policy lookup (MX delivery with MTA-STS on)."""

    @property
    def grouped_by(self) -> str:
        """The domain MX-group rules see: a relay is its own group (@domain rules are
        about the destination's MX hosts)."""
        return "" if self.relay is not None else self.domain


@dataclass(frozen=True)
class _Way:
    targets: list[Target]
    port: int
    relay: Relaying | None
    sts: Found | None = None


async def find(
    settings: Settings, resources: Resources, host: str, signed: Signature
) -> Route | Outcome:
    """The route for a delivery of ``signed`` to ``host``, or the report that ends it
    here (a TLS report of ours goes without DANE or MTA-STS)."""
    shown = host
    try:
        host = ascii_domain(host)  # every lookup and match by the A-label form
    except IdnError:
        return Outcome.final(report.perm_dns(shown.encode("utf-8", "surrogateescape")))
    with_sts = settings.mta_sts and not signed.lenient and not host.startswith("[")
    try:
        way = await _way(settings, resources, host, signed, with_sts)
    except routes.RouteError as e:
        return Outcome.final(report.control_error(str(e)))
    except DnsHard as e:
        name = shown if str(e) == host else str(e)  # reports show what qmail-send gave
        return Outcome.final(report.perm_dns(name.encode("utf-8", "surrogateescape")))
    except DnsSoft:
        return Outcome.final(report.TEMP_DNS)
    except NullMx:
        return Outcome.final(report.null_mx(shown.encode("utf-8", "surrogateescape")))
    if not way.targets:
        return Outcome.final(report.NOMX)
    chosen = usable(way.targets, settings.local, way.relay is not None)
    if chosen is None:
        return Outcome.final(report.AMBIGUOUS_MX)
    origin = signed.origin
    chosen, refused = enforce_mx(settings.home, host, way.sts, chosen, origin.ip or "")
    if refused is not None:
        return Outcome.final(refused)
    return Route(host, chosen, way.port, origin, way.relay, way.sts)


async def _way(
    settings: Settings, resources: Resources, host: str, signed: Signature, with_sts: bool
) -> _Way:
    """The addresses to try, by authsenders, smtproutes, or MX.

    dnspython is imported only when a name must be looked up: deliveries to an address
    literal or to a relay given as an IP address start faster without it.
    """
    who = signed.sender.decode("utf-8", "surrogateescape")
    route = routes.route_for(host, settings.routes, who, settings.senders)
    relay = relaying_for(route, settings.smtpauth) if route is not None else None
    name = route.relay if route is not None else host
    port = route.port if route is not None else routes.DEFAULT_PORT
    ip = ip_literal(name) if route is not None or name.startswith("[") else None
    if ip is not None:
        return _Way([Target(ip, 0, name)], port, relay)
    from qremote.routing import resolve  # start-up: dnspython only when a name is looked up
    from qremote.routing.dnsquery import on_loopback  # start-up: likewise

    resolver = resources.resolver(settings)
    if route is not None:
        return _Way(await resolve.relay_targets(resolver, route.relay), port, relay)
    dane = not signed.lenient and settings.dane is not DaneMode.OFF and on_loopback(resolver)
    mx = resolve.mx_targets(resolver, host, _SHUFFLE, dane)
    if not with_sts:
        return _Way(await mx, port, None)
    # The policy lookup runs alongside the MX lookup; it never fails the delivery itself.
    targets, sts = await asyncio.gather(mx, _sts(host, resolver, resources))
    return _Way(targets, port, None, sts)


async def _sts(host: str, resolver: AsyncResolver, resources: Resources) -> Found:
    try:
        return await discover.find(host, resolver, resources.sts, time.time())
    except Exception as e:  # noqa: BLE001 - a bug here must not stop mail: no policy
        return Found(None, problem=f"sts-policy-fetch-error: {e.__class__.__name__}: {e}")
