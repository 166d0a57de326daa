"""Everything verifying will ever import, imported before verifyd gives up root.

Python imports some modules only when first needed: the IDNA codec for the first
internationalized signer, dnspython's record classes for the first answer of their
type, the Ed25519 verifier for the first such signature. A daemon that has dropped to
qmail-smtpd's user may no longer be able to read the interpreter's files (a Python under
/root, say), and it must not meet a message that needs a module it cannot load. So before
it drops, it verifies messages of every kind once, with keys made for the purpose, which
imports all of it. ``tests/test_verifyd.py`` holds this so: after the warm-up, verifying
real mail imports nothing.
"""

from __future__ import annotations

import base64
import encodings.idna  # noqa: F401 - the codec, loaded by name only on first use
import os
import time

import dns.message
import dns.rdtypes.ANY.SOA  # noqa: F401 - record classes load on first use
import dns.rdtypes.ANY.TXT  # noqa: F401
import dns.rrset
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from qremote.fdutil import memory_file
from qremote.signing import dkim as dkim_signer
from qremote.signing import domainkeys as dk_signer
from qremote.signing.keys import SigningKey
from qremote.signing.message import parse as parse_message
from qremote.verify.build import Settings, build
from qremote.verify.txt import Records

MESSAGE = (
    "From: Jörg <joerg@exämple.invalid>\nTo: bob@example.invalid\nSubject: Grüße\n"
    "Date: Sun, 22 Nov 2026 12:00:00 +0000\n\nHallo.\n"
).encode()
DOMAIN = "xn--exmple-cua.invalid"


def _record(key: SigningKey) -> bytes:
    public = key.key.public_key()
    if key.is_rsa:
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)


def _dns_answer() -> None:
    """A TXT answer and a negative one with its SOA, through dnspython's wire parser."""
    query = dns.message.make_query("s._domainkey.example.invalid.", "TXT")
    response = dns.message.make_response(query)
    response.answer.append(
        dns.rrset.from_text("s._domainkey.example.invalid.", 300, "IN", "TXT", '"v=DKIM1"')
    )
    response.authority.append(
        dns.rrset.from_text("example.invalid.", 300, "IN", "SOA", "a. b. 1 2 3 4 5")
    )
    dns.message.from_wire(response.to_wire())


def warm_up(metrics: bool = False) -> None:
    """Verify one message signed every way we verify (DKIM RSA and Ed25519, DomainKeys);
    with ``metrics``, write the Prometheus text once too (prometheus_client loaded)."""
    if metrics:
        # start-up: prometheus_client only in a verifyd that serves /metrics
        from qremote.metrics.counts import VERIFY_SERIES, Counts
        from qremote.metrics.exposition import render

        render(Counts(), VERIFY_SERIES)
    _dns_answer()
    rsa_key = SigningKey(DOMAIN, "r", "", rsa.generate_private_key(65537, 2048))
    ed_key = SigningKey(DOMAIN, "e", "", ed25519.Ed25519PrivateKey.generate())
    parsed = parse_message(MESSAGE)
    now = int(time.time())
    fields = b"".join(
        dkim_signer.sign(parsed, DOMAIN, key, now, dkim_signer.Options())
        for key in (rsa_key, ed_key)
    )
    fields += dk_signer.sign(parsed, DOMAIN, rsa_key)
    message = fields.replace(b"\r\n", b"\n") + MESSAGE
    records = Records({f"{k.selector}._domainkey.{DOMAIN}": _record(k) for k in (rsa_key, ed_key)})
    settings = Settings("warm.invalid", [], 60, {}, "pass")
    fd = memory_file("qremote-warm-up", message)
    try:
        built = build(settings, fd, len(message), records)  # type: ignore[arg-type]
        os.close(built.out)
    finally:
        os.close(fd)
