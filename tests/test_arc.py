"""ARC on the way in (RFC 8617 section 5.2): a chain sealed by an independent sealer
(Perl's Mail::DKIM ARC signer) is evaluated into one ``arc=`` result of our
Authentication-Results field, through both paths of qremote-dkimverify; hostile chains
fail with a reason and the message still goes on."""

# The verify fixtures (home, queue, thin_filter) are test_dkimverify's, imported by name.
# ruff: noqa: F811
from __future__ import annotations

import os
import subprocess

from cryptography.hazmat.primitives import serialization

from tests.support import keys
from tests.test_dkimverify import ENVELOPE, HERE, ar_of, home, queue, thin_filter  # noqa: F401

FORWARDER = "lists.example.net"
MSG = (
    b"Authentication-Results: mx.lists.example.net; dkim=pass header.d=example.com\n"
    b"From: Alice <alice@example.com>\nTo: list@lists.example.net\nSubject: hello\n"
    b"Date: Sun, 22 Nov 2026 12:00:00 +0000\n\nHello list.\n"
)


def seal(home, zone, tmp_path, message: bytes = MSG, selector: str = "arc1", chain: str = "none",
         publish: bool = True, forwarder: str = FORWARDER) -> bytes:  # fmt: skip
    """``message`` with the next ARC set of ``forwarder``, sealed by Mail::DKIM (the
    message must carry that forwarder's Authentication-Results field on top)."""
    key = keys.write_key(str(tmp_path / "forwarder"), forwarder, selector)
    if publish:
        keys.publish(zone, forwarder, selector, key)
    keyfile = tmp_path / f"{selector}.pem"
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    done = subprocess.run(
        ["perl", os.path.join(HERE, "support", "seal_arc.pl"), str(keyfile), forwarder,
         selector, f"mx.{forwarder}", chain],  # fmt: skip
        input=message,
        capture_output=True,
        check=True,
    )
    return done.stdout.replace(b"\r\n", b"\n")


def arc_of(queued) -> str:
    text = ar_of(queued).decode()
    [arc] = [part.strip() for part in text.split(";")[1:] if part.strip().startswith("arc=")]
    return arc


CLIENT = "127.0.0.9"
"""The SMTP client's address as tcpserver gives it (TCPREMOTEIP): ARC's smtp.remote-ip."""
PROPS = f"header.oldest-pass=0 smtp.remote-ip={CLIENT}"


def run(home, queue, message: bytes, client: str | None = CLIENT):
    home.write("me", "mx.example.org\n")
    queue.environ = {"TCPREMOTEIP": client} if client is not None else {}
    q = queue.run(home.path, message, ENVELOPE)
    assert q.status == 0, q.log
    return q


def test_a_sealed_chain_passes(home, zone, tmp_path, queue):
    q = run(home, queue, seal(home, zone, tmp_path))
    assert arc_of(q) == (
        f"arc=pass (as.1.{FORWARDER}=pass, ams.1.{FORWARDER}=pass) {PROPS}"
    )
    assert ar_of(q).startswith(b"Authentication-Results: mx.example.org;\n\tdkim=none;\n\tarc=")


def test_two_forwarders_make_a_chain_of_two_that_passes(home, zone, tmp_path, queue):
    once = seal(home, zone, tmp_path)
    second = "relay.example.org"
    received = f"Authentication-Results: mx.{second}; arc=pass\n".encode() + once
    twice = seal(home, zone, tmp_path, received, "arc2", "pass", forwarder=second)
    q = run(home, queue, twice)
    assert arc_of(q) == (
        f"arc=pass (as.2.{second}=pass, ams.2.{second}=pass, as.1.{FORWARDER}=pass) {PROPS}"
    )


def test_oldest_pass_names_the_oldest_set_whose_message_signature_still_holds(
    home, zone, tmp_path, queue
):
    """The second forwarder changed the body before sealing: its own signature holds,
    the first forwarder's does not, so the message is as it was from set 2 on."""
    once = seal(home, zone, tmp_path).replace(b"Hello list.", b"Hello list!")
    second = "relay.example.org"
    received = f"Authentication-Results: mx.{second}; arc=pass\n".encode() + once
    twice = seal(home, zone, tmp_path, received, "arc2", "pass", forwarder=second)
    q = run(home, queue, twice)
    assert arc_of(q).endswith(f"header.oldest-pass=2 smtp.remote-ip={CLIENT}")


def test_the_client_address_is_said_only_when_tcpserver_gave_a_real_one(
    home, zone, tmp_path, queue
):
    sealed = seal(home, zone, tmp_path)
    assert arc_of(run(home, queue, sealed, client=None)).endswith("header.oldest-pass=0")
    forged = "127.0.0.1; dkim=pass"
    assert arc_of(run(home, queue, sealed, client=forged)).endswith("header.oldest-pass=0")
    said = arc_of(run(home, queue, sealed, client="2001:db8::1"))
    assert said.endswith('smtp.remote-ip="2001:db8::1"')  # not a token: RFC 8601 quotes it


def test_a_message_changed_after_the_seal_fails(home, zone, tmp_path, queue):
    sealed = seal(home, zone, tmp_path).replace(b"Hello list.", b"Hello, list!")
    q = run(home, queue, sealed)
    assert arc_of(q).startswith("arc=fail (Most recent ARC-Message-Signature did not validate")


def test_a_seal_whose_key_is_not_published_fails(home, zone, tmp_path, queue):
    q = run(home, queue, seal(home, zone, tmp_path, publish=False))
    assert arc_of(q).startswith("arc=fail")


def test_without_arc_fields_the_field_has_no_arc_result(home, zone, tmp_path, queue):
    q = run(home, queue, MSG)
    assert b"arc=" not in ar_of(q)


def test_hostile_chains_fail_with_a_reason_and_the_message_goes_on(home, zone, tmp_path, queue):
    sealed = seal(home, zone, tmp_path)
    head, _, body = sealed.partition(b"\n\n")
    arc = [line for line in head.split(b"\n") if line.lower().startswith(b"arc-")]
    cases = {
        "more than 50 ARC sets": b"\n".join(
            f"ARC-Seal: i={n}; a=rsa-sha256; cv=pass; d=x.example; s=s; b=AA==".encode()
            for n in range(1, 53)
        ) + b"\n" + sealed,
        "an instance number past 50": sealed.replace(b"i=1;", b"i=99999999999999999999;"),
        "duplicate": b"\n".join(arc) + b"\n" + sealed,
        "gap": sealed.replace(b"i=1;", b"i=2;"),
        "no instance": b"ARC-Seal: \x00\xff;;;=\n" + sealed,
        "a set without its seal": b"\n".join(a for a in arc if not a.startswith(b"ARC-Seal"))
        + b"\n" + body,
    }
    for name, message in cases.items():
        q = run(home, queue, message)
        said = arc_of(q)
        assert said.startswith("arc=fail ("), (name, said)
        assert q.message.endswith(body), name  # delivered, unchanged below our field
    assert "more than 50 ARC sets" in arc_of(run(home, queue, cases["more than 50 ARC sets"]))
    assert "without an instance number" in arc_of(run(home, queue, cases["no instance"]))


def test_a_long_chain_is_named_newest_first_and_counted_past_four():
    from qremote.verify.arccheck import _sets

    sets = [
        {"instance": i, "as-domain": f"hop{i}.example".encode(), "as-valid": True,
         "ams-domain": f"hop{i}.example".encode(), "ams-valid": i == 6}
        for i in range(1, 7)
    ]  # fmt: skip
    assert _sets(sets) == (
        "as.6.hop6.example=pass, ams.6.hop6.example=pass, as.5.hop5.example=pass, "
        "as.4.hop4.example=pass, 3 more"
    )
