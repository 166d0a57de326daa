"""DANE for SMTP (RFC 7672): TLSA records and matching a server's certificates to them.

Pure functions over certificates as DER bytes; the DNS side is in :mod:`qremote.dane.lookup`.

- DANE-EE (usage 3): the leaf certificate, or its public key, matches; no name or expiry
  check (RFC 7672 section 3.1.1).
- DANE-TA (usage 2): a certificate the server sent matches, and the leaf chains to it
  and carries one of the reference names (the TLSA base domain, or the next-hop domain:
  RFC 7672 section 3.2.3), checked by ``cryptography``'s X.509 verification.
- PKIX-TA and PKIX-EE (usages 0 and 1), and selectors or matching types we do not know,
  are unusable (RFC 7672 section 3.1.3). TLSA records that are all unusable still mean
  TLS is required, without authentication.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

DANE_TA = 2
DANE_EE = 3


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        return (
            self.usage in (DANE_TA, DANE_EE)
            and self.selector in (0, 1)
            and self.mtype
            in (
                0,
                1,
                2,
            )
        )


@dataclass(frozen=True)
class Dane:
    """What DNSSEC says about one MX host's TLS."""

    records: tuple[Tlsa, ...] = ()
    """The usable TLSA records; empty: TLS required, no authentication possible."""
    names: tuple[str, ...] = ()
    """Names a DANE-TA certificate may carry: the TLSA base domain, the next-hop domain."""
    failure: str | None = None
    """The TLSA lookup failed (SERVFAIL, bogus, time-out): this host must not be used now."""
    found: int = 0
    """TLSA records published, usable or not (for reports)."""

    def digest(self) -> str:
        """Identifies this set of records: a TLS session or kept connection authenticated
        against other records (or none) is never used for this host."""
        text = "\n".join(
            sorted(f"{r.usage} {r.selector} {r.mtype} {r.data.hex()}" for r in self.records)
        )
        return hashlib.sha256(text.encode()).hexdigest()[:32]


class Mismatch(Exception):
    """No TLSA record matches what the server presented; the text says why."""


def _selected(cert: x509.Certificate, der: bytes, selector: int) -> bytes:
    if selector == 0:
        return der
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _matches(record: Tlsa, cert: x509.Certificate, der: bytes) -> bool:
    data = _selected(cert, der, record.selector)
    if record.mtype == 1:
        data = hashlib.sha256(data).digest()
    elif record.mtype == 2:
        data = hashlib.sha512(data).digest()
    return data == record.data


def verify(chain: list[bytes], dane: Dane, now: datetime.datetime | None = None) -> int:
    """The usage of the record that authenticated ``chain`` (leaf first, as the server
    sent it); :class:`Mismatch` when none does."""
    if not chain:
        raise Mismatch("the server sent no certificate")
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError:
        raise Mismatch("the server's certificate cannot be parsed") from None
    leaf = certs[0]
    for record in dane.records:
        if record.usage == DANE_EE and _matches(record, leaf, chain[0]):
            return DANE_EE
    problems: list[str] = []
    for record in dane.records:
        if record.usage != DANE_TA:
            continue
        for cert, der in zip(certs[1:], chain[1:], strict=True):
            if _matches(record, cert, der):
                problem = _chains_to(leaf, certs[1:], cert, dane.names, now)
                if problem is None:
                    return DANE_TA
                problems.append(problem)
    if problems:
        raise Mismatch(f"DANE-TA: {problems[0]}")
    kinds = sorted({f"{r.usage} {r.selector} {r.mtype}" for r in dane.records})
    raise Mismatch(f"no TLSA record ({', '.join(kinds)}) matches the server's certificates")


def _chains_to(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchor: x509.Certificate,
    names: tuple[str, ...],
    now: datetime.datetime | None,
) -> str | None:
    """None when ``leaf`` chains to ``anchor`` and carries one of ``names``; else why not."""
    from cryptography.x509.verification import (
        Criticality,
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    # RFC 7672 asks for a chain to the anchor and a name, not the Web PKI's extension
    # rules; cryptography insists on basicConstraints in CAs and a SAN in the leaf.
    ca_policy = ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, Criticality.AGNOSTIC, None
    )
    ee_policy = ExtensionPolicy.permit_all().require_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    builder = (
        PolicyBuilder()
        .store(Store([anchor]))
        .time(now or datetime.datetime.now(datetime.UTC))
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
    )
    last = "no reference name"
    for name in names:
        try:
            verifier = builder.build_server_verifier(x509.DNSName(name))
            verifier.verify(leaf, intermediates)
        except VerificationError as e:
            last = f"the certificate does not chain to the trust anchor for {name}: {e}"
            continue
        except ValueError as e:
            last = f"{name}: {e}"
            continue
        return None
    return last
