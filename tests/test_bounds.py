"""Each bound in qremote/limits.py, and the other hostile-input defects, as behaviour.

The reply bounds and the order of replies are exercised byte by byte in
test_hostile_peers.py and test_hostile_properties.py; here are the rest: names that
cannot be files, verification work, forged verdicts, DNS names and time-outs, and
control files that are not text.
"""

from __future__ import annotations

import os
import re

import pytest

from qremote import limits
from qremote.authres import authserv_id_of
from qremote.fdutil import memory_file
from qremote.verify.rewrite import CHUNK, header_block_end, rename_forged
from tests import test_dkimverify as verify_tests
from tests.support.smtpserver import ScriptedServer
from tests.test_dkimverify import ENVELOPE, MSG, ar_of, ours, results

# The receiving site and the stand-in qmail-queue, as fixtures: the verification bounds
# hold on both paths (in-process, and the thin filter with the verifying daemon).
home = verify_tests.home
site = verify_tests.site
queue = verify_tests.queue
thin_filter = verify_tests.thin_filter

PLAIN = b"Subject: t\n\nbody\n"


def test_mx_name_too_long_to_be_a_file_has_no_tls_policy_file(home, zone):
    """253 characters is a legal host name; with ``.pem`` it is not a legal file name."""
    mx_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57, "net"])
    assert len(mx_name) == 253
    os.makedirs(os.path.join(home.control, "tlshosts"))
    with ScriptedServer() as mx:
        zone.mx("example.net", (10, mx_name))
        zone.a(mx_name, mx.ip)
        run = home.deliver("example.net", "a@example.org", ["b@example.net"], PLAIN)
    assert run.qmail.startswith(b"K" + mx.ip.encode())


def test_host_with_a_label_over_63_characters_bounces(home):
    host = "x" * 64 + ".example"
    run = home.deliver(host, "a@example.org", ["b@" + host], PLAIN)
    expected = b"DSorry, I couldn't find any host named " + host.encode() + b". (#5.1.2)\n\0"
    assert run.output == expected


def test_dns_waits_no_longer_than_timeoutremote(home, zone):
    """A name server that never answers: the look-up gives up within timeoutremote (here
    2 s), not the resolver's own 20 s. The bound asserted is generous: it is a hang
    check, not a speed test."""
    home.write("timeoutremote", "2\n")
    zone.drop.add("example.net")
    run = home.deliver("example.net", "a@example.org", ["b@example.net"], PLAIN)
    assert run.output == b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0"
    assert run.seconds < limits.DNS_TOTAL - 5


def test_control_me_that_is_not_ascii_names_the_file(home):
    with open(os.path.join(home.control, "me"), "wb") as f:
        f.write(b"m\xe9.example.org\n")
    run = home.deliver("[127.0.0.1]", "a@example.org", ["b@example.net"], PLAIN)
    assert run.output == (
        b"ZUnable to read control files. (#4.3.0)\n"
        b"control/me: 'm\\udce9.example.org' is not a host name (not printable ASCII)\n\0"
    )


# -- the verify filter ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b' "mx.example.org"; dkim=pass',
        b" (a comment) mx.example.org; dkim=pass",
        b" (nested (comment) here)\n\t \"MX.Example.Org\" 1; dkim=pass",
        b' "mx.example\\.org"; dkim=pass',
        b" mx.example.org",
    ],
)
def test_authserv_id_is_read_as_rfc_8601_writes_it(value):
    assert authserv_id_of(value) == b"mx.example.org"


def test_forged_verdict_with_a_quoted_authserv_id_is_renamed(site, queue):
    forged = b'Authentication-Results: "mx.example.org"; dkim=pass header.d=bank.example\n'
    q = queue.run(site.path, forged + MSG, ENVELOPE)
    assert b"\nX-Original-" + forged in q.message


def test_other_authserv_ids_are_left_alone():
    head = b'Authentication-Results: "mx.example.org.evil"; dkim=pass\nSubject: x\n'
    assert rename_forged(head, "mx.example.org") == (head, 0)


@pytest.mark.parametrize("shift", range(-4, 5))
def test_header_block_end_across_the_read_chunk_boundary(shift):
    """The empty line that ends the header block, placed around the 1 MB chunk boundary:
    a line end just before the boundary must not be taken for an empty header block."""
    line = b"X-Pad: " + b"p" * 70 + b"\n"
    head = line * ((CHUNK + shift) // len(line))
    head += b"X-Last: " + b"q" * (CHUNK + shift - len(head) - 9) + b"\n"
    assert _block_end(head + b"\nbody\n") == len(head) + 1


def _block_end(message: bytes) -> int:
    """header_block_end on ``message`` held in a memory file, as the filter holds it."""
    fd = memory_file("test", message)
    try:
        return header_block_end(fd, len(message))
    finally:
        os.close(fd)


def _header_with_line_end_at(offset: int, total: int) -> bytes:
    """Header fields of ``total`` bytes with a line end at byte ``offset``."""
    first = b"X-A: " + b"a" * (offset - 5) + b"\n"
    return first + b"X-B: " + b"b" * (total - len(first) - 6) + b"\n"


@pytest.mark.parametrize("before", range(1, 6))
def test_line_end_just_before_the_chunk_boundary_is_not_an_empty_header_block(before):
    head = _header_with_line_end_at(CHUNK - before, 2 * CHUNK + 5000)
    assert _block_end(head + b"\nbody\n") == len(head) + 1


def test_forged_verdict_after_a_header_block_over_2mb_is_renamed(site, queue):
    forged = b"Authentication-Results: mx.example.org; dkim=pass header.d=bank.example\n"
    head = _header_with_line_end_at(CHUNK - 3, 2 * CHUNK + 100)
    q = queue.run(site.path, head + forged + MSG, ENVELOPE)
    assert q.status == 0
    assert b"\nX-Original-" + forged in q.message


def _dkimpy_signature(site, message: bytes, **kw) -> bytes:
    import dkim as dkimpy
    from cryptography.hazmat.primitives import serialization

    pem = site.rsa.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    wire = message.replace(b"\n", b"\r\n")
    return dkimpy.sign(wire, b"s1", b"example.com", pem, **kw).replace(b"\r\n", b"\n")


def test_verification_work_is_bounded_for_a_hundred_signatures(site, queue):
    """Anyone can copy a signature a hundred times with the right body hash and a wrong
    b=: only the first five are evaluated, the rest are neutral, never a verdict."""
    message = MSG + b"line of a large body\n" * 100_000
    signature = _dkimpy_signature(site, message)
    value = re.search(rb"[;\s]b=\s*(\S{4})", signature)
    assert value is not None
    swap = b"AAAA" if value.group(1) != b"AAAA" else b"BBBB"
    broken = signature[: value.start(1)] + swap + signature[value.end(1) :]
    many = signature + broken * 99
    q = queue.run(site.path, many + message, ENVELOPE)
    assert q.status == 0
    found = results(q)
    n = limits.VERIFY_MAX_DKIM_SIGNATURES
    assert found == ["dkim=pass"] + ["dkim=fail"] * (n - 1) + ["dkim=neutral"] * (100 - n)
    assert b"dkim=neutral (not evaluated: only the first 5 signatures are)" in ar_of(q)
    assert q.message.endswith(many + message)


def test_signature_with_wrong_body_hash_fails_without_dkimpy(site, queue):
    message = ours(site, domainkeys=False)
    tampered = message.replace(b"Hello Bob.", b"Hello Eve.")
    q = queue.run(site.path, tampered, ENVELOPE)
    assert b"dkim=fail (body hash did not verify)" in ar_of(q)


def test_length_limited_signature_says_what_is_unsigned(site, queue):
    sig = _dkimpy_signature(site, MSG, length=True)
    appended = sig + MSG + b"Click here: http://evil.example/\n"
    q = queue.run(site.path, appended, ENVELOPE)
    assert b"dkim=pass (l= leaves 34 bytes of the body unsigned)" in ar_of(q)
    site.write("dkimlength", "policy\n")
    q = queue.run(site.path, appended, ENVELOPE)
    assert b"dkim=policy (l= leaves 34 bytes of the body unsigned)" in ar_of(q)
    q = queue.run(site.path, sig + MSG, ENVELOPE)
    assert results(q) == ["dkim=pass"]


# -- DNS answers that are too generous ------------------------------------------------------


def _resolver(dns_server):
    from qremote.routing import dnsquery

    return dnsquery.make_resolver([(dns_server.ip, dns_server.port)], 5, 10)


def test_only_the_best_fifty_mx_hosts_are_looked_up(zone, dns_server):
    import asyncio
    import random

    from qremote.routing import resolve

    zone.mx("many.example", *[(i, f"mx{i}.many.example") for i in range(120)])
    for i in range(120):
        zone.a(f"mx{i}.many.example", f"127.6.{i // 200}.{i % 200 + 1}")
    lookup = resolve.mx_targets(_resolver(dns_server), "many.example", random.Random())
    targets = asyncio.run(lookup)
    best = [f"mx{i}.many.example" for i in range(limits.DNS_MAX_MX_HOSTS)]
    assert [t.name for t in targets] == best


def test_no_more_than_a_hundred_addresses_are_tried(zone, dns_server):
    import asyncio
    import random

    from qremote.routing import resolve

    zone.a("crowd.example", *[f"127.6.{i // 200}.{i % 200 + 1}" for i in range(300)])
    lookup = resolve.mx_targets(_resolver(dns_server), "crowd.example", random.Random())
    assert len(asyncio.run(lookup)) == limits.DNS_MAX_TARGETS


# -- closing ----------------------------------------------------------------------------------


def test_closing_a_connection_the_peer_does_not_read_takes_at_most_close_wait():
    """Once the outcome is known, a peer that reads nothing more (our send buffer full)
    must not hold the report: the connection is dropped after CLOSE_WAIT. The bound
    asserted is generous: a hang check, not a speed test."""
    import asyncio
    import socket
    import time

    from qremote.smtp.body import Body
    from qremote.smtp.conversation import Conversation, Envelope
    from qremote.smtp.session import Session

    async def scenario() -> float:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        conv = Conversation("peer", Envelope("me.example", b"a@b", [b"c@d"]))
        session = Session(reader, writer, conv, Body(b""), 10)
        writer.write(b"x" * (16 << 20))  # far more than the socket buffers hold
        started = time.monotonic()
        await session.close()
        took = time.monotonic() - started
        theirs.close()
        return took

    assert asyncio.run(scenario()) < limits.CLOSE_WAIT + 3  # it was 5 s, then 30 with TLS
