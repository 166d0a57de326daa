"""Signing keys for tests and the demo: written into a qmail home's key store, with the
DNS TXT records that publish them."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


def txt_strings(record: str) -> str:
    """Zone-file form: the record split into quoted strings of at most 255 bytes."""
    return " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))


def dkim_record(key) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


def pem(key) -> bytes:
    """The private key as PEM (PKCS#1 for RSA), as dkimpy's ``sign`` and Mail::DKIM take it."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def write_key(
    control: str,
    domain: str,
    selector: str,
    kind: str = "rsa",
    link: str | None = "default",
    bits: int = 2048,
    mode: int = 0o600,
    traditional: bool = False,
):
    """Create a key in ``control/domainkeys/<domain>/<selector>.pem``; link it as active."""
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if traditional
        else serialization.PrivateFormat.PKCS8
    )
    folder = os.path.join(control, "domainkeys", domain)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{selector}.pem")
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    os.chmod(path, mode)
    if link:
        target = os.path.join(folder, link)
        if os.path.lexists(target):
            os.unlink(target)
        os.symlink(f"{selector}.pem", target)
    return key


def publish(zone, domain: str, selector: str, key) -> None:
    zone.add(f"{selector}._domainkey.{domain}", "TXT", txt_strings(dkim_record(key)))
