"""DNS TXT records for signing keys, in zone-file syntax (pure functions)."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

STRING_MAX = 255


def public_value(key) -> str:
    """The ``p=`` value: base64 of the SubjectPublicKeyInfo (RSA) or the raw key (Ed25519)."""
    public = key.public_key()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return base64.b64encode(raw).decode()


def record(key) -> str:
    kind = "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa"
    return f"v=DKIM1; k={kind}; p={public_value(key)}"


def chunks(text: str) -> list[str]:
    """A TXT record's text as character-strings of at most 255 bytes each."""
    return [text[i : i + STRING_MAX] for i in range(0, len(text), STRING_MAX)]


def quoted(text: str) -> str:
    """Zone-file and dnspython form of a long TXT value: ``"..." "..."``."""
    return " ".join(f'"{c}"' for c in chunks(text))


def zone_lines(domain: str, selector: str, key, ttl: int = 3600) -> str:
    """``<selector>._domainkey.<domain>. TTL IN TXT ( "..." "..." )``, strings <= 255 bytes."""
    parts = chunks(record(key))
    owner = f"{selector}._domainkey.{domain.rstrip('.')}."
    if len(parts) == 1:
        return f'{owner} {ttl} IN TXT "{parts[0]}"'
    inner = "\n\t".join(f'"{c}"' for c in parts)
    return f"{owner} {ttl} IN TXT (\n\t{inner} )"


def key_size(key) -> int:
    return key.key_size if isinstance(key, rsa.RSAPrivateKey) else 256
