"""Internationalized mail against real peers: aiosmtpd with and without SMTPUTF8 and
8BITMIME, the loopback DNS server with IDN zones in A-label form, and both verifiers
(dkimpy, Mail::DKIM) on signed UTF-8 messages."""

from __future__ import annotations

import pytest

from tests.support import keys, verifiers
from tests.support.smtpserver import Script, ScriptedServer

IDN = "exämple.de"
ALABEL = "xn--exmple-cua.de"
ASCII_MSG = b"From: a@example.org\nSubject: hi\n\nbody\n"


def served(zone, domain_alabel: str, server: ScriptedServer) -> None:
    zone.mx(domain_alabel, (10, f"mx.{domain_alabel}"))
    zone.a(f"mx.{domain_alabel}", server.ip)


def send(home, host, sender, recipients, message=ASCII_MSG):
    run = home.deliver(host, sender, recipients, message)
    assert run.status == 0
    return run


def test_utf8_local_part_to_an_smtputf8_server(home, zone):
    with ScriptedServer(smtputf8=True) as mx:
        served(zone, ALABEL, mx)
        run = send(home, IDN, "a@example.org", [f"josé@{IDN}"])
    assert run.qmail.startswith(b"K"), run.qmail
    [conn] = mx.connections
    mail = next(c for c in conn.commands if c.startswith("MAIL"))
    assert mail.endswith("SMTPUTF8") and "BODY=8BITMIME" in mail
    assert mx.received[0].rcpt_tos == [f"josé@{IDN}"]  # U-labels, as qmail-send gave them


def test_utf8_local_part_to_a_server_without_it_bounces_and_sends_nothing_raw(home, zone):
    with ScriptedServer() as mx:
        served(zone, ALABEL, mx)
        run = send(home, IDN, "a@example.org", [f"josé@{IDN}"])
    assert run.qmail.startswith(b"D"), run.qmail
    assert b"does not support SMTPUTF8" in run.qmail and b"(#5.6.7)" in run.qmail
    assert bytes(mx.received_bytes).isascii() and not mx.received


def test_one_utf8_recipient_of_two_is_refused_the_other_delivered(home, zone):
    with ScriptedServer() as mx:
        served(zone, ALABEL, mx)
        run = send(home, IDN, "a@example.org", [f"josé@{IDN}", f"jose@{IDN}"])
    assert run.output.startswith(b"h" + mx.ip.encode() + b" does not support SMTPUTF8")
    assert run.reports[1] == b"r" and run.reports[-1].startswith(b"K")
    assert mx.received[0].rcpt_tos == [f"jose@{ALABEL}"]
    assert bytes(mx.received_bytes).isascii()


def test_idn_domain_only_goes_as_a_labels_without_smtputf8(home, zone):
    with ScriptedServer() as mx:
        served(zone, ALABEL, mx)
        run = send(home, IDN, f"ana@{IDN}", [f"bob@{IDN}"])
    assert run.qmail.startswith(b"K"), run.qmail
    [conn] = mx.connections
    assert conn.commands[1] == f"MAIL <ana@{ALABEL}> SIZE=45"  # no SMTPUTF8
    assert conn.commands[2] == f"RCPT <bob@{ALABEL}>"
    assert bytes(mx.received_bytes).isascii()


def test_the_next_mx_may_offer_smtputf8(home, zone):
    with ScriptedServer() as plain, ScriptedServer(smtputf8=True) as able:
        zone.mx(ALABEL, (10, f"mx1.{ALABEL}"), (20, f"mx2.{ALABEL}"))
        zone.a(f"mx1.{ALABEL}", plain.ip)
        zone.a(f"mx2.{ALABEL}", able.ip)
        run = send(home, IDN, f"josé@{IDN}", [f"bob@{IDN}"])
    assert run.qmail.startswith(b"K") and able.received and not plain.received


def test_idn_mx_lookup_uses_a_labels_and_reports_show_the_given_form(home, zone):
    run = send(home, "nicht-dä.de", "a@example.org", ["b@nicht-dä.de"])
    # The form qmail-send gave, through qmail's outsafe (bytes outside ASCII as '?').
    assert run.qmail == b"DSorry, I couldn't find any host named nicht-d??.de. (#5.1.2)\n"
    assert ("xn--nicht-d-cxa.de", "MX") in zone.queries


@pytest.mark.parametrize("host", ["ExÄmple.DE", "EXÄMPLE.de"])
def test_mixed_case_idn_is_the_same_domain(home, zone, host):
    with ScriptedServer(smtputf8=True) as mx:
        served(zone, ALABEL, mx)
        run = send(home, host, "a@example.org", [f"b@{host}"])
    assert run.qmail.startswith(b"K"), run.qmail


def test_an_invalid_idn_bounces(home, zone):
    run = send(home, "a\u200db.example", "a@example.org", ["b@a\u200db.example"])
    assert run.qmail.startswith(b"DSorry, I couldn't find any host named"), run.qmail
    assert not zone.queries


def test_smtproutes_names_an_idn_in_either_form(home, zone):
    with ScriptedServer() as relay:
        home.write("smtproutes", f"{IDN}:{relay.ip}\n")
        assert send(home, ALABEL, "a@example.org", [f"b@{ALABEL}"]).qmail.startswith(b"K")
        home.write("smtproutes", f"{ALABEL}:{relay.ip}\n")
        assert send(home, IDN, "a@example.org", [f"b@{IDN}"]).qmail.startswith(b"K")
    assert len(relay.received) == 2


@pytest.mark.parametrize("folder", [IDN, ALABEL])
def test_utf8_subject_signed_as_the_a_label_and_verified(home, zone, dns_server, folder):
    key = keys.write_key(home.control, folder, "s1")
    keys.publish(zone, ALABEL, "s1", key)
    message = f"From: Jörg <joerg@{IDN}>\nSubject: Grüße aus München\n\nHallo\n".encode()
    with ScriptedServer(smtputf8=True) as mx:
        served(zone, "example.net", mx)
        run = send(home, "example.net", f"joerg@{IDN}", ["b@example.net"], message)
    assert run.qmail.startswith(b"K"), run.qmail
    content = mx.received[0].content
    assert f"d={ALABEL}".encode() in content
    assert verifiers.dkimpy(content, dns_server.ip, dns_server.port)[0] is True
    results = verifiers.mail_dkim(content, dns_server.ip, dns_server.port)
    assert [r[0] for r in results] == ["dkim"] and results[0][3] == "pass", results
    assert b"no DomainKeys: its identity is an IDN" in run.qmail


def test_utf8_subject_with_an_ascii_from_passes_dkim_and_domainkeys(home, zone, dns_server):
    key = keys.write_key(home.control, "example.org", "s1")
    keys.publish(zone, "example.org", "s1", key)
    message = "From: Jörg <joerg@example.org>\nSubject: Grüße aus München\n\nHallo\n".encode()
    with ScriptedServer(smtputf8=True) as mx:
        served(zone, "example.net", mx)
        run = send(home, "example.net", "joerg@example.org", ["b@example.net"], message)
    assert run.qmail.startswith(b"K") and b"DomainKeys d=example.org" in run.qmail
    content = mx.received[0].content
    results = verifiers.mail_dkim(content, dns_server.ip, dns_server.port)
    assert [(r[0], r[3]) for r in results] == [("dkim", "pass"), ("domainkeys", "pass")]


def test_utf8_headers_go_as_qmail_sends_them_unless_utf8headers_says_bounce(home, zone):
    """The default is the C client's behaviour: legacy 8-bit header text is delivered
    (with a note) to a server without SMTPUTF8; ``bounce`` is RFC 6531's rule."""
    message = "From: a@example.org\nSubject: Grüße\n\nbody\n".encode()
    latin1 = "From: a@example.org\nSubject: Grüße\n\nbody\n".encode("latin-1")
    legacy = Script(extensions=["PIPELINING", "8BITMIME"])
    with ScriptedServer(legacy) as mx:
        served(zone, "example.net", mx)
        for raw in (message, latin1):
            run = send(home, "example.net", "a@example.org", ["b@example.net"], raw)
            assert run.qmail.startswith(b"K"), run.qmail
            assert b"not ASCII to a server that did not offer" in run.qmail
        assert mx.received[0].content.endswith(message.replace(b"\n", b"\r\n"))
        assert mx.received[1].content.endswith(latin1.replace(b"\n", b"\r\n"))
        home.write("utf8headers", "bounce\n")
        run = send(home, "example.net", "a@example.org", ["b@example.net"], message)
        assert run.qmail.startswith(b"D") and b"header fields are not ASCII" in run.qmail
        assert b"(#5.6.7)" in run.qmail and len(mx.received) == 2
    home.remove("utf8headers")
    with ScriptedServer(smtputf8=True) as able:
        served(zone, "example.net", able)
        run = send(home, "example.net", "a@example.org", ["b@example.net"], message)
    assert run.qmail.startswith(b"K") and b"SMTPUTF8" not in run.qmail
    assert able.connections[0].commands[1].endswith(" SMTPUTF8")


def test_an_8bit_body_to_a_server_without_8bitmime_goes_as_qmail_sends_it(home, zone, dns_server):
    key = keys.write_key(home.control, "example.org", "s1")
    keys.publish(zone, "example.org", "s1", key)
    message = "From: a@example.org\nSubject: 8bit\n\nGrüße\n".encode()
    lenient = Script(extensions=["PIPELINING", "SIZE 1000000"])  # no 8BITMIME, takes it
    with ScriptedServer(lenient) as mx:
        served(zone, "example.net", mx)
        run = send(home, "example.net", "a@example.org", ["b@example.net"], message)
    assert run.qmail.startswith(b"K"), run.qmail
    assert b"8-bit body to a server that did not offer 8BITMIME" in run.qmail
    content = mx.received[0].content
    assert verifiers.dkimpy(content, dns_server.ip, dns_server.port) == [True]
    assert verifiers.mail_dkim(content, dns_server.ip, dns_server.port)[0][3] == "pass"
    with ScriptedServer(eight_bit_mime=False) as strict:
        served(zone, "example.net", strict)
        run = send(home, "example.net", "a@example.org", ["b@example.net"], message)
    assert run.qmail.startswith(b"D") and b"500 Error: strict ASCII mode" in run.qmail


def test_qremote_sign_signs_utf8_headers_as_the_a_label(home, zone, dns_server):
    key = keys.write_key(home.control, ALABEL, "s1")
    keys.publish(zone, ALABEL, "s1", key)
    message = f"From: Jörg <joerg@{IDN}>\nSubject: Grüße\n\nHallo\n".encode()
    done = home.qremote("sign", "--sender", f"joerg@{IDN}", input=message, text=False)
    assert done.returncode == 0, done.stderr
    assert f"d={ALABEL}".encode() in done.stdout and done.stdout.endswith(message)
    signed = done.stdout.replace(b"\n", b"\r\n")
    assert verifiers.dkimpy(signed, dns_server.ip, dns_server.port) == [True]


def test_control_files_name_an_idn_in_either_form(home, zone):
    """mxgroups, domainbindings and authsenders match an IDN written as U-labels."""
    home.write("mxgroups", f"idn:1:@{IDN}\n")
    home.write("mxgroupwait", "0\n")
    home.write("domainbindings", f"{IDN}:127.0.0.1\n")
    with ScriptedServer(smtputf8=True) as mx, ScriptedServer() as relay:
        served(zone, ALABEL, mx)
        home.write("authsenders", f"@{IDN}:{relay.ip}\n")
        run = send(home, ALABEL, f"ana@{ALABEL}", [f"b@{ALABEL}"])
        assert run.qmail.startswith(b"K") and len(relay.received) == 1
        home.remove("authsenders")
        run = send(home, ALABEL, f"ana@{ALABEL}", [f"b@{ALABEL}"])
    assert run.qmail.startswith(b"K"), run.qmail
    [conn] = mx.connections
    assert conn.commands[0] == f"EHLO {ALABEL}"  # the binding's domain, as its A-label
    assert conn.peer[0] == "127.0.0.1"
