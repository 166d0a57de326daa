"""ARC on the way out (RFC 8617 section 5.1): a message that came in through our filter
and is forwarded by a domain listed in control/arcsign leaves with the next ARC set, and
the chain verifies under two independent verifiers, dkimpy's ``arc_verify`` and Perl's
Mail::DKIM::ARC::Verifier, with the keys on the loopback DNS server.

The story of every end-to-end test: Alice's message, signed by Mail::DKIM, reaches our
filter (our Authentication-Results field says dkim=pass), a list changes it (a subject
tag, a footer: Alice's signature now fails), and our qmail-remote forwards it."""

from __future__ import annotations

import os
import subprocess

import pytest

from qremote.signing.arc import Plan, plan
from qremote.signing.message import parse
from tests.support import keys, qmailhome, verifiers
from tests.support.queue import StandInQueue
from tests.support.smtpserver import ScriptedServer

HERE = os.path.dirname(os.path.abspath(__file__))
LIST = "lists.example.org"
RELAY = "relay.example.net"
ENVELOPE = b"Falice@example.com\0Tlist@lists.example.org\0\0"
ALICE = (
    b"From: Alice <alice@example.com>\nTo: list@lists.example.org\nSubject: hello\n"
    b"Date: Sun, 22 Nov 2026 12:00:00 +0000\nMessage-ID: <1@example.com>\n\nHello list.\n"
)


# --- what is sealed, and how: the decision alone, without keys or sockets --------------


def decided(message: bytes, ours: str = "mx.example.org") -> Plan | str | None:
    return plan(parse(message), ours)


def test_mail_that_did_not_come_in_through_us_is_not_ours_to_seal():
    assert decided(ALICE) is None
    other = b"Authentication-Results: mx.example.com; dkim=pass\n" + ALICE
    assert decided(other) is None


def test_the_first_forward_starts_a_chain_with_our_results():
    ours = b"Authentication-Results: mx.example.org;\n\tdkim=pass header.d=example.com\n"
    got = decided(ours + ALICE)
    assert got == Plan(1, b"none", b"mx.example.org;\r\n\tdkim=pass header.d=example.com", [])


def test_a_quoted_or_commented_authserv_id_is_still_ours():
    ours = b'Authentication-Results: (x) "MX.example.org"; dkim=pass\n'
    assert isinstance(decided(ours + ALICE), Plan)


def _set(i: int, cv: str = "pass") -> bytes:
    return (
        f"ARC-Seal: i={i}; a=rsa-sha256; cv={cv}; d=f{i}.example; s=s; b=AA==\n"
        f"ARC-Message-Signature: i={i}; a=rsa-sha256; d=f{i}.example; s=s; h=from; bh=AA=; "
        f"b=AA==\nARC-Authentication-Results: i={i}; mx.f{i}.example; dkim=pass\n"
    ).encode()


def test_a_chain_we_found_to_pass_gets_the_next_set_covering_every_earlier_one():
    ours = b"Authentication-Results: mx.example.org; dkim=fail; arc=pass (as.2.f2=pass)\n"
    got = decided(ours + _set(2) + _set(1, "none") + ALICE)
    assert isinstance(got, Plan)
    assert (got.instance, got.cv) == (3, b"pass")
    assert [(h.key, h.value.split(b";")[0]) for h in got.covered] == [
        (b"arc-authentication-results", b" i=1"),
        (b"arc-message-signature", b" i=1"),
        (b"arc-seal", b" i=1"),
        (b"arc-authentication-results", b" i=2"),
        (b"arc-message-signature", b" i=2"),
        (b"arc-seal", b" i=2"),
    ]


def test_a_chain_we_found_to_fail_is_sealed_as_failed_covering_only_our_set():
    ours = b"Authentication-Results: mx.example.org; arc=fail (as.1.f1=fail)\n"
    got = decided(ours + _set(1, "none") + ALICE)
    assert got == Plan(2, b"fail", b"mx.example.org; arc=fail (as.1.f1=fail)", [])


def test_a_chain_that_is_no_longer_a_chain_is_sealed_as_failed():
    ours = b"Authentication-Results: mx.example.org; arc=pass\n"
    got = decided(ours + _set(3) + _set(1, "none") + ALICE)  # a gap: 1, 3
    assert isinstance(got, Plan) and (got.instance, got.cv, got.covered) == (4, b"fail", [])


@pytest.mark.parametrize(
    ("chain", "said", "why"),
    [
        (_set(2, "fail") + _set(1, "none"), "arc=fail", "already failed (cv=fail at i=2)"),
        (b"".join(_set(i) for i in range(50, 0, -1)), "arc=pass", "the chain has 50 sets already"),
        (_set(1, "none"), "dkim=pass", "no arc= verdict on the chain it carries"),
        (_set(1, "none"), "none (not verified: the daemon was away)", "no arc= verdict"),
    ],
    ids=["already failed", "fifty sets", "no verdict", "passed on unverified"],
)
def test_no_set_is_added_where_rfc_8617_ends_the_chain_or_we_cannot_vouch(chain, said, why):
    ours = f"Authentication-Results: mx.example.org; {said}\n".encode()
    got = decided(ours + chain + ALICE)
    assert isinstance(got, str) and why in got


def test_a_field_of_ours_too_long_to_have_come_from_our_filter_is_not_copied():
    ours = b"Authentication-Results: mx.example.org; dkim=pass (" + b"x" * 9000 + b")\n"
    got = decided(ours + ALICE)
    assert isinstance(got, str) and "longer than 8192 bytes" in got


# --- forwarded through qremote, verified by two independent verifiers -----------------


def alice_signed(zone, tmp_path) -> bytes:
    """Alice's message signed by Mail::DKIM as example.com, its key published."""
    key = keys.write_key(str(tmp_path / "author"), "example.com", "s1")
    keys.publish(zone, "example.com", "s1", key)
    keyfile = tmp_path / "alice.pem"
    keyfile.write_bytes(keys.pem(key))
    return subprocess.run(
        ["perl", os.path.join(HERE, "support", "sign_dkim.pl"), str(keyfile), "example.com", "s1"],
        input=ALICE,
        capture_output=True,
        check=True,
    ).stdout.replace(b"\r\n", b"\n")


def received(home, tmp_path, message: bytes, authserv_id: str) -> bytes:
    """``message`` as our filter queues it on ``home`` (in-process; both paths give the
    same bytes: tests/test_dkimverify.py)."""
    home.write("authservid", authserv_id + "\n")
    queue = StandInQueue(str(tmp_path / f"queue-{authserv_id}"))
    queue.environ = {"TCPREMOTEIP": "127.0.0.9"}
    done = queue.run(home.path, message, ENVELOPE)
    assert done.status == 0 and done.message is not None, done.log
    return done.message


def listed(message: bytes) -> bytes:
    """What a mailing list does to a message: a subject tag and a footer."""
    return message.replace(b"Subject: hello", b"Subject: [list] hello") + b"--\nThe list.\n"


def forwarder(home, zone, domain: str, selector: str) -> None:
    """``home`` forwards for ``domain``: its key published, its mail ARC-sealed."""
    key = keys.write_key(home.control, domain, selector)
    keys.publish(zone, domain, selector, key)
    home.write("arcsign", f"{domain}\n")


def forward(home, zone, message: bytes, sender: str):
    """``message`` delivered by ``home``'s qmail-remote to a loopback MX: (run, received)."""
    with ScriptedServer() as mx:
        zone.mx("example.net", (10, "mx.example.net"))
        zone.a("mx.example.net", mx.ip)
        run = home.deliver("example.net", sender, ["bob@example.net"], message)
    assert run.status == 0 and run.qmail.startswith(b"K"), run.output
    return run, mx.received[0].content


def both(dns_server, message: bytes) -> tuple[str, str]:
    """The chain's result under dkimpy and under Mail::DKIM."""
    py, why = verifiers.dkimpy_arc(message, dns_server.ip, dns_server.port)
    perl, detail = verifiers.mail_dkim_arc(message, dns_server.ip, dns_server.port)
    return (py, why), (perl, detail)


def note(run) -> str:
    """The report's last line: what was signed and sealed."""
    return run.reports[-1].decode().rstrip("\n").rsplit("\n", 1)[-1]


def arc_fields(message: bytes) -> list[bytes]:
    head = message.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    return [line for line in head.split(b"\n") if line.lower().startswith(b"arc-")]


@pytest.fixture
def first_hop(home, zone, dns_server, tmp_path):
    """Alice's message through our filter, changed by the list, forwarded by qremote."""
    inbound = received(home, tmp_path, alice_signed(zone, tmp_path), "mx.lists.example.org")
    assert b"dkim=pass header.d=example.com" in inbound
    forwarder(home, zone, LIST, "arc1")
    run, sent = forward(home, zone, listed(inbound), f"list-owner@{LIST}")
    return run, sent


def test_a_forwarded_message_is_sealed_and_both_verifiers_pass(first_hop, dns_server):
    run, sent = first_hop
    assert note(run).endswith(f"ARC i=1 cv=none d={LIST} s=arc1.")
    (py, why), (perl, detail) = both(dns_server, sent)
    assert (py, perl) == ("pass", "pass"), (why, detail)
    fields = arc_fields(sent)
    assert fields[0].startswith(b"ARC-Seal: i=1; a=rsa-sha256; t=")
    assert b"cv=none" in b"".join(fields)
    aar = sent.split(b"ARC-Authentication-Results: ", 1)[1].split(b"\r\nDKIM-Signature", 1)[0]
    assert aar.startswith(b"i=1; mx.lists.example.org;\r\n\tdkim=pass header.d=example.com")
    # Alice's own signature did not survive the list: the chain is what vouches for it.
    results = verifiers.mail_dkim(sent, dns_server.ip, dns_server.port)
    assert {(d, detail.split()[0]) for kind, d, _, detail in results if kind == "dkim"} == {
        ("example.com", "fail"),
        (LIST, "pass"),
    }


def test_a_second_forwarder_makes_a_chain_of_two_that_both_verifiers_pass(
    first_hop, dns_server, zone, tmp_path
):
    _, sent = first_hop
    relay = qmailhome.make(str(tmp_path / "relay"), dns_server.address)
    inbound = received(relay, tmp_path, sent.replace(b"\r\n", b"\n"), "mx.relay.example.net")
    assert b"arc=pass (as.1.lists.example.org=pass, ams.1.lists.example.org=pass)" in inbound
    assert b"header.oldest-pass=0 smtp.remote-ip=127.0.0.9" in inbound
    forwarder(relay, zone, RELAY, "arc2")
    run, twice = forward(relay, zone, inbound, f"forward@{RELAY}")
    assert note(run).endswith(f"ARC i=2 cv=pass d={RELAY} s=arc2.")
    (py, why), (perl, detail) = both(dns_server, twice)
    assert (py, perl) == ("pass", "pass"), (why, detail)
    assert len(arc_fields(twice)) == 6


def test_a_sealed_message_changed_afterwards_fails_under_both(first_hop, dns_server):
    _, sent = first_hop
    for tampered in (
        sent.replace(b"Hello list.", b"Hello, list!"),
        sent.replace(b"Subject: [list] hello", b"Subject: [list] HELLO"),
        sent.replace(b"dkim=pass header.d=example.com", b"dkim=pass header.d=example.org"),
    ):
        assert tampered != sent
        (py, _), (perl, _) = both(dns_server, tampered)
        assert (py, perl) == ("fail", "fail")


def test_a_broken_chain_that_reaches_us_is_forwarded_with_cv_fail(
    first_hop, dns_server, zone, tmp_path
):
    _, sent = first_hop
    broken = sent.replace(b"Hello list.", b"Hello, list!").replace(b"\r\n", b"\n")
    relay = qmailhome.make(str(tmp_path / "relay"), dns_server.address)
    inbound = received(relay, tmp_path, broken, "mx.relay.example.net")
    assert b"arc=fail (Most recent ARC-Message-Signature did not validate" in inbound
    forwarder(relay, zone, RELAY, "arc2")
    run, twice = forward(relay, zone, inbound, f"forward@{RELAY}")
    assert note(run).endswith(f"ARC i=2 cv=fail d={RELAY} s=arc2.")
    (py, _), (perl, _) = both(dns_server, twice)
    assert (py, perl) == ("fail", "fail")
    # The chain has ended: a third forwarder adds nothing, and says why.
    third = qmailhome.make(str(tmp_path / "third"), dns_server.address)
    inbound = received(third, tmp_path, twice.replace(b"\r\n", b"\n"), "mx.third.example")
    forwarder(third, zone, "third.example", "arc3")
    run, thrice = forward(third, zone, inbound, "fw@third.example")
    assert note(run).endswith(
        "not ARC-sealed: the chain already failed (cv=fail at i=2), which ends it."
    )
    assert len(arc_fields(thrice)) == 6


def test_mail_that_did_not_come_in_through_our_filter_is_signed_never_sealed(home, zone):
    forwarder(home, zone, LIST, "arc1")
    run, sent = forward(home, zone, listed(ALICE), f"list-owner@{LIST}")
    assert arc_fields(sent) == []
    assert "ARC" not in note(run)
    assert note(run).startswith(f"Signed: DKIM d={LIST} s=arc1 rsa-sha256")


def test_a_domain_not_in_arcsign_is_signed_not_sealed(home, zone, tmp_path):
    inbound = received(home, tmp_path, ALICE, "mx.lists.example.org")
    forwarder(home, zone, LIST, "arc1")
    home.write("arcsign", "other.example\n")
    run, sent = forward(home, zone, inbound, f"list-owner@{LIST}")
    assert arc_fields(sent) == [] and "ARC" not in note(run)


def test_an_ed25519_only_domain_is_signed_and_says_why_it_is_not_sealed(home, zone, tmp_path):
    inbound = received(home, tmp_path, ALICE, "mx.lists.example.org")
    key = keys.write_key(home.control, LIST, "ed1", "ed25519")
    keys.publish(zone, LIST, "ed1", key)
    home.write("arcsign", "*\n")
    run, sent = forward(home, zone, inbound, f"list-owner@{LIST}")
    assert arc_fields(sent) == []
    assert note(run).endswith(f"not ARC-sealed: no RSA key for {LIST}.")
    found = home.qremote("check", "--user", "root")
    assert f"control/arcsign: {LIST}" not in found.stdout  # '*' names no domain
    home.write("arcsign", f"{LIST}\nnokey.example\n")
    found = home.qremote("check", "--user", "root").stdout
    assert f"control/arcsign: {LIST} has no RSA key (ARC seals with RSA)" in found
    assert "control/arcsign: nokey.example has no key in control/domainkeys" in found


def test_qremote_sign_seals_as_a_delivery_does(home, zone, dns_server, tmp_path):
    inbound = received(home, tmp_path, alice_signed(zone, tmp_path), "mx.lists.example.org")
    forwarder(home, zone, LIST, "arc1")
    done = home.qremote(
        "sign", "--sender", f"list-owner@{LIST}", "-v", input=listed(inbound), text=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"ARC-Seal: i=1; ")
    assert f"ARC i=1 cv=none d={LIST} s=arc1" in done.stderr.decode()
    (py, why), (perl, detail) = both(dns_server, done.stdout)
    assert (py, perl) == ("pass", "pass"), (why, detail)
