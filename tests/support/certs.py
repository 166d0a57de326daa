"""Certificates made on the fly with ``cryptography``: a test CA, server certificates for
an MX name (right, wrong, expired, self-signed), written as PEM files for ssl contexts."""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, cn: str = "qremote test CA") -> Authority:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, dns_name: str, expired: bool = False, san: x509.GeneralName | None = None
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a server called ``dns_name`` (its subjectAltName,
        unless ``san`` names another)."""
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            start, end = now - datetime.timedelta(days=60), now - datetime.timedelta(days=30)
        else:
            start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(dns_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName([san or x509.DNSName(dns_name)]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def issue_for_ip(ca: Authority, ip: str) -> tuple[bytes, bytes]:
    """A server certificate for an IP address (an IP SAN, as a relay given by address has)."""
    import ipaddress

    return ca.issue(ip, san=x509.IPAddress(ipaddress.ip_address(ip)))


def self_signed(dns_name: str) -> tuple[bytes, bytes]:
    return Authority.create(dns_name).issue(dns_name)


def server_context(cert_pem: bytes, key_pem: bytes, folder: str) -> ssl.SSLContext:
    """A server-side SSLContext for aiosmtpd's STARTTLS."""
    os.makedirs(folder, exist_ok=True)
    cert_path = os.path.join(folder, "server-cert.pem")
    key_path = os.path.join(folder, "server-key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert_pem)
    with open(key_path, "wb") as f:
        f.write(key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
