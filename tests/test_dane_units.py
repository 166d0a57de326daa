"""DANE's rules without sockets or DNS: matching certificates to TLSA records (each
usage, selector and matching type), the TLS policy's DANE rows, and which resolvers'
AD bits are believed."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from qremote.control import ControlError
from qremote.dane.tlsa import Dane, Mismatch, Tlsa, verify
from qremote.routing.dnsquery import make_resolver, on_loopback
from qremote.tls.policy import Mode, PolicyFiles, decide
from tests.support import certs


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def spki(pem: bytes) -> bytes:
    return (
        x509.load_pem_x509_certificate(pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.fixture(scope="module")
def pki():
    ca = certs.Authority.create()
    leaf, _ = ca.issue("mx.example.net")
    return ca, leaf


def dane(*records: Tlsa, names=("mx.example.net", "example.net")) -> Dane:
    return Dane(records, names)


@pytest.mark.parametrize(
    "selector,mtype,select,digest",
    [
        (1, 1, spki, lambda b: hashlib.sha256(b).digest()),
        (0, 1, der, lambda b: hashlib.sha256(b).digest()),
        (1, 2, spki, lambda b: hashlib.sha512(b).digest()),
        (0, 0, der, lambda b: b),
    ],
)
def test_dane_ee_matches_the_leaf_by_each_selector_and_type(pki, selector, mtype, select, digest):
    ca, leaf = pki
    record = Tlsa(3, selector, mtype, digest(select(leaf)))
    assert verify([der(leaf)], dane(record)) == 3


def test_dane_ee_ignores_names_and_expiry():
    leaf, _ = certs.Authority.create().issue("elsewhere.example", expired=True)
    record = Tlsa(3, 1, 1, hashlib.sha256(spki(leaf)).digest())
    assert verify([der(leaf)], dane(record)) == 3


def test_dane_ta_needs_the_anchor_in_the_chain_and_a_reference_name(pki):
    ca, leaf = pki
    record = Tlsa(2, 1, 1, hashlib.sha256(spki(ca.pem())).digest())
    assert verify([der(leaf), der(ca.pem())], dane(record)) == 2
    assert verify([der(leaf), der(ca.pem())], dane(record, names=("x.org", "mx.example.net"))) == 2
    with pytest.raises(Mismatch, match="DANE-TA"):
        verify([der(leaf), der(ca.pem())], dane(record, names=("other.example",)))
    with pytest.raises(Mismatch, match="no TLSA record"):
        verify([der(leaf)], dane(record))  # the anchor was not sent


def test_dane_ta_checks_expiry():
    ca = certs.Authority.create()
    leaf, _ = ca.issue("mx.example.net", expired=True)
    record = Tlsa(2, 0, 1, hashlib.sha256(der(ca.pem())).digest())
    with pytest.raises(Mismatch, match="DANE-TA"):
        verify([der(leaf), der(ca.pem())], dane(record))


def test_a_wrong_digest_and_an_empty_chain(pki):
    _, leaf = pki
    with pytest.raises(Mismatch, match=r"no TLSA record \(3 1 1\) matches"):
        verify([der(leaf)], dane(Tlsa(3, 1, 1, b"\0" * 32)))
    with pytest.raises(Mismatch, match="no certificate"):
        verify([], dane(Tlsa(3, 1, 1, b"\0" * 32)))


def test_usable_records():
    assert Tlsa(3, 1, 1, b"").usable and Tlsa(2, 0, 2, b"").usable
    assert not any(
        r.usable
        for r in (Tlsa(0, 1, 1, b""), Tlsa(1, 1, 1, b""), Tlsa(3, 2, 1, b""), Tlsa(3, 1, 3, b""))
    )


def test_the_digest_tells_record_sets_apart_whatever_their_order():
    a, b = Tlsa(3, 1, 1, b"a"), Tlsa(3, 1, 1, b"b")
    assert dane(a, b).digest() == dane(b, a).digest() != dane(a).digest()


FILES = PolicyFiles(
    "/c", plain=frozenset({"plain.net"}), pinned=frozenset({"pinned.net"}), exhaustive=True
)


def test_policy_dane_rows():
    secure = dane(Tlsa(3, 1, 1, b"x"))
    assert decide(FILES, "plain.net", dane=secure).mode is Mode.PLAIN
    assert decide(FILES, "pinned.net", dane=secure).ca_file == "/c/tlshosts/pinned.net.pem"
    assert decide(FILES, "pinned.net", dane=secure, dane_first=True).dane == secure
    over_exhaustive = decide(FILES, "mx.net", dane=secure)
    assert over_exhaustive.mode is Mode.REQUIRED and over_exhaustive.verified
    unusable = decide(FILES, "mx.net", dane=Dane((), ("mx.net",), found=1))
    assert unusable.mode is Mode.REQUIRED and not unusable.verified
    failed = decide(FILES, "mx.net", dane=Dane(failure="SERVFAIL"))
    assert failed.failure == "SERVFAIL"
    assert decide(FILES, "mx.net").mode is Mode.PLAIN  # exhaustivelist, no DANE
    with pytest.raises(ControlError):
        decide(PolicyFiles("/c", problem="unreadable"), "mx.net", dane=secure)


def test_only_a_resolver_on_loopback_is_believed():
    assert on_loopback(make_resolver([("127.0.0.53", 53)]))
    assert on_loopback(make_resolver([("::1", 53), ("127.1.2.3", 5353)]))
    assert not on_loopback(make_resolver([("127.0.0.1", 53), ("192.0.2.1", 53)]))
