"""qremote-dkimverify's verdicts, row by row of RFC 6376 section 6.1 and RFC 8601's result
list: each case is a signature or key record made (or edited) to hit one rule, served by
the loopback DNS server, and checked by the exact result and reason we write.

Signatures are made here with ``cryptography`` over qremote's canonicalization (dkimpy's
signer cannot put arbitrary tags in); the good case passes dkimpy and Mail::DKIM too, so
the signer is known right and every other case differs from it in one tag only.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from qremote.signing import canon
from qremote.signing.dkim import selected
from qremote.signing.message import Header, parse
from tests import test_dkimverify as verify_tests
from tests.support import keys, verifiers
from tests.test_dkimverify import ENVELOPE

# Every verdict through both paths: in-process, and the thin filter with verifyd.
home = verify_tests.home
queue = verify_tests.queue
thin_filter = verify_tests.thin_filter

MSG = (
    b"From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: verdicts\n"
    b"Date: Mon, 30 Nov 2026 12:00:00 +0000\n\nHello, verdicts.\n"
)
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
GOOD_TAGS = {"v": "1", "a": "rsa-sha256", "c": "relaxed/relaxed", "d": "example.com",
             "s": "sel", "h": "from:to:subject:date"}  # fmt: skip


def signed(message: bytes = MSG, digest: str = "sha256", **tags: str | None) -> bytes:
    """``message`` with a DKIM-Signature whose tags are GOOD_TAGS changed by ``tags``
    (None drops one); a genuine RSA signature over whatever that says."""
    values = {**GOOD_TAGS, **tags}
    values = {k: v for k, v in values.items() if v is not None}
    msg = parse(message)
    header_c, _, body_c = values.get("c", "simple/simple").partition("/")
    header_c = header_c if header_c in canon.DKIM_HEADER else "relaxed"
    body = canon.DKIM_BODY.get(body_c or "simple", canon.dkim_body_relaxed)(msg.body)
    if "l" in values and values["l"].isdigit():
        body = body[: int(values["l"])]
    bh = base64.b64encode(hashlib.new(digest, body).digest()).decode()
    text = "; ".join(f"{k}={v}" for k, v in values.items()) + f"; bh={bh}; b="
    unsigned = b"DKIM-Signature: " + text.encode()
    names = [n.strip().lower().encode() for n in values.get("h", "").split(":") if n.strip()]
    header_canon = canon.DKIM_HEADER[header_c]
    data = b"".join(header_canon(h) for h in selected(msg, names))
    data += header_canon(Header(b"DKIM-Signature", unsigned + b"\r\n"))[:-2]
    algorithm = hashes.SHA256() if digest == "sha256" else hashes.SHA1()
    b = base64.b64encode(KEY.sign(data, padding.PKCS1v15(), algorithm))
    return unsigned + b + b"\n" + message


@pytest.fixture
def site(home, zone):
    home.write("me", "mx.example.org\n")
    return home


def publish(zone, record: str, selector: str = "sel") -> None:
    zone.records[(f"{selector}._domainkey.example.com", "TXT")] = [keys.txt_strings(record)]


def verdict(site, queue, message: bytes) -> str:
    """The one result our A-R field gives, with its comment: ``dkim=pass`` or
    ``dkim=neutral (reason)``."""
    q = queue.run(site.path, message, ENVELOPE)
    assert q.status == 0, q.log
    head = q.message.split(b"\n\n", 1)[0].decode()
    field = head.split("\nFrom:", 1)[0].split("\nDKIM-Signature:", 1)[0]
    result = field.split(";\n\t", 1)[1]
    return result.split(" header.")[0]


GOOD_RECORD = f"v=DKIM1; k=rsa; p={PUBLIC}"


def test_the_signer_here_is_right_by_both_verifiers(site, zone, dns_server, queue):
    publish(zone, GOOD_RECORD)
    message = signed()
    assert verifiers.dkimpy(message, dns_server.ip, dns_server.port) == [True]
    perl = verifiers.mail_dkim(message, dns_server.ip, dns_server.port)
    assert [detail for _, _, _, detail in perl] == ["pass"]
    assert verdict(site, queue, message) == "dkim=pass"


SIGNATURE_CASES = [
    # (what the signature says, the result and reason we write)
    ({"q": "foo/bar:dns/txt:exam/ple"}, "dkim=pass"),
    ({"q": "dns/txt"}, "dkim=pass"),
    ({"q": "http/well-known"},
     "dkim=neutral (no supported query method in q=http/well-known, RFC 6376 3.5)"),
    ({"v": "2"}, "dkim=neutral (incompatible version v=2, RFC 6376 6.1.1)"),
    ({"a": "rsa-md5"}, "dkim=neutral (unsupported algorithm a=rsa-md5)"),
    ({"a": "dsa-sha1"}, "dkim=neutral (unsupported algorithm a=dsa-sha1)"),
    ({"c": "future/relaxed"}, "dkim=neutral (unsupported canonicalization c=future/relaxed)"),
    ({"i": "@other.example"},
     "dkim=permerror (i= is not in d= or a subdomain of it, RFC 6376 6.1.1)"),
    ({"i": "alice@mail.example.com"}, "dkim=pass"),
    ({"h": "to:subject:date"}, "dkim=permerror (the From field is not signed, RFC 6376 6.1.1)"),
    ({"s": None}, "dkim=permerror (the signature lacks s=, RFC 6376 6.1.1)"),
    ({"x": "1000000000", "t": "999999000"}, "dkim=policy (signature expired, x= has passed)"),
    ({"t": "99999999999"}, "dkim=neutral (t= is in the future)"),
    ({"x": "10", "t": "20"}, "dkim=permerror (x= is before t=, RFC 6376 3.5)"),
    ({"l": "ten"}, "dkim=permerror (l= is not a decimal number)"),
]


@pytest.mark.parametrize("tags,expected", SIGNATURE_CASES, ids=[str(c[0]) for c in SIGNATURE_CASES])
def test_signature_tags(site, zone, queue, tags, expected):
    publish(zone, GOOD_RECORD)
    assert verdict(site, queue, signed(**tags)) == expected


def test_rsa_sha1_is_not_acceptable(site, zone, queue):
    publish(zone, GOOD_RECORD)
    message = signed(digest="sha1", a="rsa-sha1")
    expected = "dkim=policy (rsa-sha1 is not acceptable, RFC 8301 3.1)"
    assert verdict(site, queue, message) == expected


KEY_CASES = [
    (f"v=DKIM1; k=rsa; s=email:web:fine; p={PUBLIC}", {}, "dkim=pass"),
    (f"v=DKIM1; k=rsa; s=*; p={PUBLIC}", {}, "dkim=pass"),
    (f"v=DKIM1; k=rsa; s=web; p={PUBLIC}", {},
     "dkim=permerror (the key is not for email: s=web, RFC 6376 3.6.1)"),
    (f"v=DKIM1; k=rsa; h=sha1; p={PUBLIC}", {},
     "dkim=permerror (the key allows only h=sha1, RFC 6376 3.6.1)"),
    (f"v=DKIM1; k=rsa; h=sha1:sha256; p={PUBLIC}", {}, "dkim=pass"),
    (f"v=DKIM1; k=rsa; t=s; p={PUBLIC}", {"i": "alice@mail.example.com"},
     "dkim=permerror (the key has t=s and i= is in a subdomain of d=, RFC 6376 3.6.1)"),
    (f"v=DKIM1; k=rsa; t=y:s; p={PUBLIC}", {"i": "alice@example.com"}, "dkim=pass"),
    ("v=DKIM1; k=rsa; p=", {}, "dkim=permerror (key revoked, p= is empty)"),
    (f"v=DKIM1; k=dsa; p={PUBLIC}", {}, "dkim=permerror (unknown key type k=dsa)"),
    (f"v=DKIM2; k=rsa; p={PUBLIC}", {},
     "dkim=permerror (the key record's v= is not DKIM1, RFC 6376 3.6.1)"),
    (f"k=rsa; p={PUBLIC}", {}, "dkim=pass"),
    (f"v=DKIM1; k=ed25519; p={PUBLIC}", {},
     "dkim=permerror (a= does not match the key type k=ed25519)"),
]


@pytest.mark.parametrize("record,tags,expected", KEY_CASES, ids=[c[0][:40] for c in KEY_CASES])
def test_key_records(site, zone, queue, record, tags, expected):
    publish(zone, record)
    assert verdict(site, queue, signed(**tags)) == expected


def test_no_key_record(site, zone, queue):
    assert verdict(site, queue, signed()) == (
        "dkim=permerror (no key record at sel._domainkey.example.com)"
    )


@pytest.mark.parametrize("trouble", ["drop", "servfail"])
def test_dns_trouble_is_temperror(site, zone, queue, trouble):
    site.write("dkimverifytimeout", "2\n")
    getattr(zone, trouble).add("sel._domainkey.example.com")
    assert verdict(site, queue, signed()).startswith("dkim=temperror (key lookup: ")


def test_altered_body_fails(site, zone, queue):
    publish(zone, GOOD_RECORD)
    altered = signed().replace(b"Hello, verdicts.", b"Hello, forgery.")
    assert verdict(site, queue, altered) == "dkim=fail (body hash did not verify)"


def test_the_exact_header_for_an_unsupported_signature(site, zone, queue):
    publish(zone, GOOD_RECORD)
    q = queue.run(site.path, signed(v="2"), ENVELOPE)
    assert q.message.startswith(
        b"Authentication-Results: mx.example.org;\n"
        b"\tdkim=neutral (incompatible version v=2, RFC 6376 6.1.1) header.d=example.com"
        b" header.i=@example.com header.s=sel header.a=rsa-sha256\n"
    )


def test_domainkey_with_another_query_method_is_neutral(site, zone, queue):
    from qremote.signing.domainkeys import sign as dk_sign
    from qremote.signing.keys import KeyStore

    control = os.path.join(site.path, "signer")
    keys.publish(zone, "example.com", "dk", keys.write_key(control, "example.com", "dk"))
    [key] = KeyStore(os.path.join(control, "domainkeys")).domain_keys("example.com")
    field = dk_sign(parse(MSG), "example.com", key, "nofws").replace(b"\r\n", b"\n")
    good = queue.run(site.path, field + MSG, ENVELOPE)
    assert b"domainkeys=pass" in good.message
    other = field.replace(b"q=dns", b"q=http")
    assert other != field
    q = queue.run(site.path, other + MSG, ENVELOPE)
    assert b"domainkeys=neutral (unsupported query method q=http, RFC 4870 3.3)" in q.message
