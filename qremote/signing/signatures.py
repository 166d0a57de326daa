"""The one place a private key signs, and the signatures kept for a digest signed again.

qmail-send starts one qmail-remote per recipient, so a message to a mailing list's
thousand subscribers, or to five people at one provider, is signed once per recipient
over the same bytes: two RSA signatures each time (DKIM and DomainKeys), the largest part
of qremoted's CPU per delivery. RSA with PKCS#1 v1.5 padding and Ed25519 are
deterministic: the signature is a function of the key and the digest alone. So a
long-lived process (qremoted) keeps the last :data:`KEPT` signatures by (key, hash,
digest) and answers a repeat from them; what it returns is exactly what signing again
would have returned, byte for byte.

What makes a repeat: DomainKeys signs the headers and body only, so every copy of a
message repeats; DKIM's signed data includes ``t=`` (the second of signing), so copies
signed within the same second repeat, later ones sign anew. A reloaded or rotated key is
a new key object and never matches a signature of the old one: an entry holds its key
object, compared by identity, so an address reused after the old key is freed cannot
match either.

A one-delivery process (qmail-remote without qremoted) keeps nothing worth having and
pays only a dictionary look-up.
"""

from __future__ import annotations

import hashlib
from typing import cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from qremote.signing.keys import SigningKey

KEPT = 1000
"""Signatures kept per process (about 0.5 MB: a digest and a signature of at most 512
bytes each). A burst to a list's recipients repeats the same few digests, so a
thousand covers many lists sent at once; the oldest is dropped first."""

_HASHES = {"sha256": (hashlib.sha256, hashes.SHA256()), "sha1": (hashlib.sha1, hashes.SHA1())}

_kept: dict[tuple[int, str, bytes], tuple[object, bytes]] = {}


def sign(key: SigningKey, data: bytes, hash_name: str = "sha256") -> bytes:
    """The raw signature of ``data`` with ``key``: RSA PKCS#1 v1.5 over the ``hash_name``
    digest (``sha1`` only for DomainKeys), or Ed25519 over the SHA-256 digest (RFC 8463
    signs the hash, not the data)."""
    new_hash, algorithm = _HASHES[hash_name]
    digest = new_hash(data).digest()
    private = key.key
    entry = _kept.get((id(private), hash_name, digest))
    if entry is not None and entry[0] is private:
        return entry[1]
    if key.is_rsa:
        signature = cast(rsa.RSAPrivateKey, private).sign(
            digest, padding.PKCS1v15(), Prehashed(algorithm)
        )
    else:
        signature = cast(ed25519.Ed25519PrivateKey, private).sign(digest)
    if len(_kept) >= KEPT:
        del _kept[next(iter(_kept))]
    _kept[(id(private), hash_name, digest)] = (private, signature)
    return signature


def forget() -> None:
    """Drop every kept signature (tests; a process that wants its memory back)."""
    _kept.clear()
