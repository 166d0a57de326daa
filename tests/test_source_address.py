"""Source address per sender domain (domainbindings, outgoingip) and the EHLO name that
goes with it, as the server sees them: 127.0.0.x are distinct local addresses."""

from __future__ import annotations

import pytest

from qremote.control import ControlError
from qremote.routing import source
from tests.support.smtpserver import ScriptedServer

MSG = b"Subject: t\n\nbody\n"


def deliver(home, zone, sender="a@example.org", ip=None):
    with ScriptedServer(ip=ip) as mx:
        zone.mx("example.net", (10, "mx.example.net"))
        zone.a("mx.example.net", mx.ip)
        run = home.deliver("example.net", sender, ["b@example.net"], MSG)
    assert run.status == 0
    return mx, run


def test_bound_domain_leaves_from_its_address_and_says_its_name(home, zone):
    home.write("domainbindings", ":127.0.0.9\nexample.org:127.0.0.7\n")
    mx, run = deliver(home, zone)
    assert run.qmail.startswith(b"K")
    [conn] = mx.connections
    assert conn.peer[0] == "127.0.0.7"
    assert conn.commands[0] == "EHLO example.org"


def test_suffix_match_and_explicit_helo(home, zone):
    home.write("domainbindings", ".example.org:127.0.0.8:out.example.org\n")
    mx, _ = deliver(home, zone, sender="a@lists.example.org")
    assert mx.connections[0].peer[0] == "127.0.0.8"
    assert mx.connections[0].commands[0] == "EHLO out.example.org"


def test_later_lines_win(home, zone):
    home.write("domainbindings", "example.org:127.0.0.10\nEXAMPLE.ORG:127.0.0.11\n")
    mx, _ = deliver(home, zone)
    assert mx.connections[0].peer[0] == "127.0.0.11"


def test_bounces_use_the_default_line_and_keep_helohost(home, zone):
    home.write("domainbindings", "example.org:127.0.0.7\n:127.0.0.12\n")
    mx, _ = deliver(home, zone, sender="")
    assert mx.connections[0].peer[0] == "127.0.0.12"
    assert mx.connections[0].commands[0] == "EHLO me.example.org"


def test_outgoingip_when_no_binding_matches(home, zone):
    home.write("domainbindings", "other.org:127.0.0.7\n")
    home.write("outgoingip", "127.0.0.13\n")
    mx, _ = deliver(home, zone)
    assert mx.connections[0].peer[0] == "127.0.0.13"
    assert mx.connections[0].commands[0] == "EHLO me.example.org"


def test_address_not_on_this_host_is_temporary_and_named(home, zone):
    home.write("domainbindings", "# ours\nexample.org:203.0.113.5\n")
    mx, run = deliver(home, zone)
    assert run.output == (
        b"ZUnable to read control files. (#4.3.0)\ncontrol/domainbindings line 2: "
        b"203.0.113.5 is not an address of this host (Cannot assign requested address)\n\0"
    )
    assert mx.connections == []


@pytest.mark.parametrize(
    "line, problem",
    [
        ("example.org:not-an-ip", "control/domainbindings line 1: 'not-an-ip' is not an IP"),
        ("example.org", "control/domainbindings line 1: no ':' in 'example.org'"),
        ("example.org:[::1", "control/domainbindings line 1: unclosed '['"),
    ],
)
def test_unparsable_binding_is_temporary_and_named(home, zone, line, problem):
    home.write("domainbindings", line + "\n")
    run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.output.startswith(b"ZUnable to read control files. (#4.3.0)\n" + problem.encode())


def test_bad_outgoingip_is_named(home, zone):
    home.write("outgoingip", "localhost\n")
    run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.output == (
        b"ZUnable to read control files. (#4.3.0)\n"
        b"control/outgoingip: 'localhost' is not an IP address\n\0"
    )


def test_ipv6_binding(home, zone):
    home.write("domainbindings", "example.org:[::1]:v6.example.org\n")
    home.write("notipme", "::1\n")
    mx, run = deliver(home, zone, ip="::1")
    assert run.qmail.startswith(b"K")
    assert mx.connections[0].peer[0] == "::1"
    assert mx.connections[0].commands[0] == "EHLO v6.example.org"


def test_binding_of_the_other_family_skips_that_mx(home, zone):
    home.write("domainbindings", "example.org:[::1]\n")
    mx, run = deliver(home, zone)
    assert mx.connections == []
    assert run.output == (
        b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
        b"No address of example.net is of the family of ::1 (control/domainbindings line 1).\n\0"
    )


def test_mixed_family_mx_uses_the_matching_address(home, zone):
    home.write("domainbindings", "example.org:127.0.0.14\n")
    home.write("notipme", "::1\n")
    with ScriptedServer() as v4:
        zone.mx("example.net", (10, "mx.example.net"))
        zone.a("mx.example.net", "::1", v4.ip)
        run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.qmail.startswith(b"K")
    assert v4.connections[0].peer[0] == "127.0.0.14"


def test_choice_is_a_pure_function():
    table = source.parse_bindings(["example.org:127.0.0.7", ":127.0.0.9:dflt.example"])
    assert source.source_for(b"x@example.org", table, None, "me") == source.Source(
        "127.0.0.7", "example.org", "control/domainbindings line 1"
    )
    assert source.source_for(b"", table, None, "me").helo == "dflt.example"
    assert source.source_for(b"x@y", {}, None, "me") == source.Source(None, "me")
    with pytest.raises(ControlError):
        source.parse_bindings(["a:1.2.3"])
