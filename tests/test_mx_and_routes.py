"""Route resolution end to end: MX order and fallback, greeting errors, A/AAAA, literals,
smtproutes, the ipme self-check, and qmail's DNS error texts, on a real loopback DNS."""

from __future__ import annotations

import asyncio
import random

import dns.flags
import dns.message
import dns.query
import dns.resolver
import pytest

from qremote.routing import dnsquery, resolve
from qremote.routing.dnserrors import DnsHard, DnsSoft
from tests.support.blackhole import Blackhole
from tests.support.expect import UNSIGNED
from tests.support.keys import txt_strings
from tests.support.smtpserver import Script, ScriptedServer

MSG = b"Subject: t\n\nbody\n"


def send(home, host="example.net", recipients=("b@example.net",)):
    run = home.deliver(host, "a@example.org", list(recipients), MSG)
    assert run.status == 0
    return run


def test_lower_preference_is_tried_first(home, zone):
    with ScriptedServer() as best, ScriptedServer() as backup:
        zone.mx("example.net", (20, "backup.example.net"), (10, "best.example.net"))
        zone.a("best.example.net", best.ip)
        zone.a("backup.example.net", backup.ip)
        run = send(home)
    assert run.reports[-1].startswith(b"K" + best.ip.encode())
    assert len(best.received) == 1 and backup.connections == []


def test_greeting_4xx_moves_on_to_the_next_mx(home, zone):
    with ScriptedServer(Script(greeting="421 overloaded")) as first, ScriptedServer() as second:
        zone.mx("example.net", (10, "a.example.net"), (20, "b.example.net"))
        zone.a("a.example.net", first.ip)
        zone.a("b.example.net", second.ip)
        run = send(home)
    assert run.reports[-1].startswith(b"K" + second.ip.encode() + b" accepted message.")
    assert len(second.received) == 1


def test_every_mx_5xx_greeting_bounces_with_the_last_text(home, zone):
    with (
        ScriptedServer(Script(greeting="554 no")) as a,
        ScriptedServer(Script(greeting="554 5.7.1 nor me")) as b,
    ):
        zone.mx("example.net", (10, "a.example.net"), (20, "b.example.net"))
        zone.a("a.example.net", a.ip)
        zone.a("b.example.net", b.ip)
        run = send(home)
    assert run.output == (
        b"DConnected to " + b.ip.encode() + b" but greeting failed.\n"
        b"Remote host said: 554 5.7.1 nor me\n" + UNSIGNED + b"\0"
    )


def test_5xx_then_4xx_greeting_is_temporary(home, zone):
    with (
        ScriptedServer(Script(greeting="554 no")) as a,
        ScriptedServer(Script(greeting="421 later")) as b,
    ):
        zone.mx("example.net", (10, "a.example.net"), (20, "b.example.net"))
        zone.a("a.example.net", a.ip)
        zone.a("b.example.net", b.ip)
        run = send(home)
    assert run.output == (
        b"ZConnected to " + b.ip.encode() + b" but greeting failed.\n"
        b"Remote host said: 421 later\n" + UNSIGNED + b"\0"
    )


def test_5xx_greeting_and_an_unreachable_mx_is_temporary(home, zone):
    with ScriptedServer(Script(greeting="554 no")) as a, Blackhole() as dead:
        home.write("timeoutconnect", "1\n")
        zone.mx("example.net", (10, "a.example.net"), (20, "dead.example.net"))
        zone.a("a.example.net", a.ip)
        zone.a("dead.example.net", dead.ip)
        run = send(home)
    assert run.output.startswith(b"ZConnected to " + a.ip.encode() + b" but greeting failed.")


def test_refused_connection_moves_on(home, zone):
    with ScriptedServer() as good:
        zone.mx("example.net", (10, "a.example.net"), (20, "b.example.net"))
        zone.a("a.example.net", "127.3.250.250")  # nothing listens there
        zone.a("b.example.net", good.ip)
        run = send(home)
    assert run.reports[-1].startswith(b"K" + good.ip.encode())


def test_no_host_reachable(home, zone):
    zone.mx("example.net", (10, "a.example.net"))
    zone.a("a.example.net", "127.3.250.251")
    run = send(home)
    assert run.output == b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0"


def test_no_mx_falls_back_to_a_record(home, zone):
    with ScriptedServer() as mx:
        zone.a("example.net", mx.ip)
        run = send(home)
    assert run.reports[-1].startswith(b"K" + mx.ip.encode())


def test_ipv6_delivery_through_aaaa(home, zone):
    home.write("notipme", "::1\n")
    with ScriptedServer(ip="::1", port=25) as mx:
        zone.mx("example.net", (10, "v6.example.net"))
        zone.a("v6.example.net", "::1")
        run = send(home)
    assert run.reports[-1].startswith(b"K::1 accepted message.")
    assert len(mx.received) == 1


def test_literal_address(home, zone):
    with ScriptedServer() as mx:
        run = send(home, host=f"[{mx.ip}]", recipients=(f"b@[{mx.ip}]",))
    assert run.reports[-1].startswith(b"K" + mx.ip.encode())
    assert zone.queries == []


def test_smtproutes_relay_with_port_skips_mx(home, zone):
    with ScriptedServer(port=2525) as relay:
        home.write("smtproutes", f"# comment\n\n.example.net:{relay.ip}:2525\n")
        run = send(home, host="sub.example.net")
    assert run.reports[-1].startswith(b"K" + relay.ip.encode())
    assert all(q[1] != "MX" for q in zone.queries)


def test_smtproutes_default_route_and_later_lines_win(home, zone):
    with ScriptedServer(port=2526) as relay:
        home.write("smtproutes", f":127.3.250.252\n:{relay.ip}:2526\n")
        run = send(home)
    assert run.reports[-1].startswith(b"K" + relay.ip.encode())


def test_smtproutes_empty_relay_means_mx(home, zone):
    with ScriptedServer() as mx:
        home.write("smtproutes", "example.net:\n:127.3.250.253\n")
        zone.mx("example.net", (10, "mx.example.net"))
        zone.a("mx.example.net", mx.ip)
        run = send(home)
    assert run.reports[-1].startswith(b"K" + mx.ip.encode())


def test_smtproutes_to_ourselves_is_allowed(home, zone):
    with ScriptedServer(ip="127.0.0.1", port=2527) as local:
        home.write("smtproutes", "example.net:127.0.0.1:2527\n")
        run = send(home)
    assert run.reports[-1].startswith(b"K127.0.0.1")
    assert len(local.received) == 1


def test_smtproutes_bracketed_ipv6_relay(home, zone):
    with ScriptedServer(ip="::1", port=2528) as relay:
        home.write("smtproutes", "example.net:[::1]:2528\n")
        run = send(home)
    assert run.reports[-1].startswith(b"K::1")
    assert len(relay.received) == 1


def test_we_are_the_best_mx(home, zone):
    zone.mx("example.net", (10, "me.example.net"), (20, "other.example.net"))
    zone.a("me.example.net", "127.0.0.1")
    zone.a("other.example.net", "127.3.250.254")
    run = send(home)
    assert run.output == (
        b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n"
        b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n\0"
    )


def test_only_exchangers_better_than_us_are_tried(home, zone):
    with ScriptedServer() as better:
        zone.mx(
            "example.net",
            (10, "better.example.net"),
            (20, "me.example.net"),
            (30, "worse.example.net"),
        )
        zone.a("better.example.net", better.ip)
        zone.a("me.example.net", "127.0.0.1")
        zone.a("worse.example.net", "127.3.250.249")
        run = send(home)
    assert run.reports[-1].startswith(b"K" + better.ip.encode())


def test_nxdomain_bounces(home, zone):
    run = send(home, host="nowhere.example.net")
    assert run.output == b"DSorry, I couldn't find any host named nowhere.example.net. (#5.1.2)\n\0"


def test_servfail_is_temporary(home, zone):
    zone.servfail.add("example.net")
    run = send(home)
    assert run.output == b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0"


def test_garbage_dns_answer_is_temporary(home, zone):
    zone.garbage.add("example.net")
    run = send(home)
    assert run.output == b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0"


def test_domain_without_mx_or_address_bounces(home, zone):
    zone.add("example.net", "TXT", '"v=spf1 -all"')
    run = send(home)
    assert run.output == b"DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n\0"


def test_mx_hosts_that_do_not_exist_bounce(home, zone):
    zone.mx("example.net", (10, "gone.example.net"))
    run = send(home)
    assert run.output == b"DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n\0"


def test_mx_host_lookup_failing_temporarily_is_temporary(home, zone):
    zone.mx("example.net", (10, "flaky.example.net"))
    zone.servfail.add("flaky.example.net")
    run = send(home)
    assert run.output == b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0"


def test_one_flaky_mx_host_does_not_stop_delivery_to_another(home, zone):
    with ScriptedServer() as mx:
        zone.mx("example.net", (10, "flaky.example.net"), (20, "good.example.net"))
        zone.servfail.add("flaky.example.net")
        zone.a("good.example.net", mx.ip)
        run = send(home)
    assert run.reports[-1].startswith(b"K" + mx.ip.encode())


def test_null_mx_bounces(home, zone):
    zone.add("example.net", "MX", "0 .")
    run = send(home)
    assert run.output == b"DSorry, example.net does not accept mail (null MX). (#5.1.10)\n\0"


def test_relay_that_does_not_exist_is_named(home, zone):
    home.write("smtproutes", "example.net:relay.example.com\n")
    run = send(home)
    assert run.output == b"DSorry, I couldn't find any host named relay.example.com. (#5.1.2)\n\0"


def test_equal_preferences_are_shuffled(home, zone):
    with ScriptedServer() as a, ScriptedServer() as b:
        zone.mx("example.net", (10, "a.example.net"), (10, "b.example.net"))
        zone.a("a.example.net", a.ip)
        zone.a("b.example.net", b.ip)
        for _ in range(20):
            send(home)
    # The chance that a fair shuffle picks the same host 20 times running is 1 in 524288.
    assert len(a.received) > 0 and len(b.received) > 0


def test_dns_time_out_is_temporary(dns_server, zone):
    """A server that never answers: the lookup fails for now, not for good."""
    zone.drop.add("example.net")
    resolver = dnsquery.make_resolver([(dns_server.ip, dns_server.port)])
    resolver.lifetime = 1.0
    with pytest.raises(DnsSoft):
        asyncio.run(resolve.mx_targets(resolver, "example.net", random.Random()))
    assert ("example.net", "MX") in zone.queries


def test_a_cached_answer_reads_as_the_servers_did_without_asking_again(dns_server, zone):
    """qremoted's resolver keeps answers for their TTL; what a lookup returns from the
    cache (records, no data, NXDOMAIN) is what the server's answer gave."""
    zone.negative_ttl = 300
    zone.mx("mail.test", (10, "mx1.mail.test"))
    zone.a("mx1.mail.test", "127.0.0.9")
    resolver = dnsquery.make_resolver([(dns_server.ip, dns_server.port)])
    resolver.cache = dns.resolver.LRUCache(100)

    async def twice(name: str, rdtype: str) -> list:
        said = []
        for _ in range(2):
            try:
                found = await dnsquery.query(resolver, name, rdtype)
                said.append(([r.to_text() for r in found], found.canonical))
            except DnsHard as e:
                said.append(f"hard {e}")
        return said

    assert asyncio.run(twice("mail.test", "MX")) == [(["10 mx1.mail.test."], "mail.test")] * 2
    assert asyncio.run(twice("mx1.mail.test", "AAAA")) == [([], "")] * 2  # no data
    assert asyncio.run(twice("nowhere.mail.test", "A")) == ["hard nowhere.mail.test"] * 2
    assert sorted(zone.queries) == [
        ("mail.test", "MX"), ("mx1.mail.test", "AAAA"), ("nowhere.mail.test", "A")
    ]  # each asked once: the second came from the cache
    before = dict(dnsquery.LOOKUPS)
    asyncio.run(twice("mx1.mail.test", "AAAA"))
    assert dnsquery.LOOKUPS["AAAA", "nodata"] - before.get(("AAAA", "nodata"), 0) == 2


def test_long_txt_records_come_back_whole(dns_server, zone):
    """TXT strings over 255 bytes are split and served (over TCP when UDP truncates)."""
    record = "v=DKIM1; k=rsa; p=" + "A" * 600
    zone.add("s._domainkey.example.com", "TXT", txt_strings(record))
    query = dns.message.make_query("s._domainkey.example.com", "TXT")
    udp = dns.query.udp(query, dns_server.ip, port=dns_server.port, timeout=5)
    assert udp.flags & dns.flags.TC
    answer = dns.query.tcp(query, dns_server.ip, port=dns_server.port, timeout=5)
    [rdata] = answer.answer[0]
    assert b"".join(rdata.strings).decode() == record
    assert max(len(s) for s in rdata.strings) == 255
