"""bench/dnscache: a delivery's DNS on qremoted's warm cache, through dnsquery.query (which
reads the resolver's cache directly) against dnspython's own ``resolve`` on the same cache.

A loopback DNS server answers once (negative answers carry a SOA, so they are kept too);
then each contender looks up, R times in turn, what a delivery to an MX domain asks: MX,
the exchanger's A and AAAA (no data), and the domain's ``_mta-sts`` TXT (NXDOMAIN). It
prints µs per set of four lookups (medians) and their ratio:

    python bench/dnscache.py [-n 2000] [-r 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dns.asyncresolver  # noqa: E402
import dns.resolver  # noqa: E402

from qremote.routing import dnsquery  # noqa: E402
from qremote.routing.dnserrors import DnsHard  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402

LOOKUPS = [
    ("mail.test", "MX"),
    ("mx1.mail.test", "A"),
    ("mx1.mail.test", "AAAA"),
    ("_mta-sts.mail.test", "TXT"),
]


async def through_query(resolver: dns.asyncresolver.Resolver) -> None:
    for name, rdtype in LOOKUPS:
        try:
            await dnsquery.query(resolver, name, rdtype)
        except DnsHard:
            pass


async def through_resolve(resolver: dns.asyncresolver.Resolver) -> None:
    for name, rdtype in LOOKUPS:
        try:
            await resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            pass


async def timed(step, resolver, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await step(resolver)
    return (time.perf_counter() - start) / n * 1e6


async def main(address: str, n: int, rounds: int) -> None:
    ip, port = address.rsplit(":", 1)
    resolver = dnsquery.make_resolver([(ip, int(port))])
    resolver.cache = dns.resolver.LRUCache(100_000)  # as qremoted's
    await through_query(resolver)  # the server answers once; the rest is the cache
    results: dict[str, list[float]] = {"dnsquery.query": [], "resolver.resolve": []}
    for _ in range(rounds):
        results["dnsquery.query"].append(await timed(through_query, resolver, n))
        results["resolver.resolve"].append(await timed(through_resolve, resolver, n))
    med = {k: statistics.median(v) for k, v in results.items()}
    for name, values in results.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:17} {med[name]:6.0f} µs per delivery's four lookups (runs: {runs})")
    ratio = med["dnsquery.query"] / med["resolver.resolve"]
    print(f"dnsquery.query / resolver.resolve: {ratio:.2f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("-r", type=int, default=5)
    args = ap.parse_args()
    with DnsServer() as server:
        server.zone.negative_ttl = 300
        server.zone.mx("mail.test", (10, "mx1.mail.test"))
        server.zone.a("mx1.mail.test", "127.0.0.9")
        asyncio.run(main(server.address, args.n, args.r))
