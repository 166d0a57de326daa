"""The RSA step of a DKIM signature check done by OpenSSL (``cryptography``), not in Python.

dkimpy checks an rsa-sha256 signature with big-integer arithmetic written in Python
(its ``int2str`` loops over bytes, then ``pow``): about a third of the CPU of verifying a
small message, in verifyd and in the in-process filter alike. Here what is hashed stays
dkimpy's (its header canonicalization and ``hash_headers``, with the same extra From: it
adds), so the data checked can never differ; only the last step, whether the signature
matches the digest under the key, is OpenSSL's.

The key record is read by dkimpy too, and OpenSSL is handed the numbers it read. Where
OpenSSL and dkimpy could answer differently, dkimpy still decides (``verify_sig`` as
before): a key dkimpy cannot read or OpenSSL will not take (an even exponent, say), one
under dkimpy's 1024 bits (it refuses those with its own words), a signature whose number
is not below the modulus (dkimpy reduces it, OpenSSL refuses it), a c= dkimpy does not
know, any algorithm but rsa-sha256 (rsa-sha1 never gets this far: dkimrules judges it
first). A signature shorter than the modulus (its leading zero bytes left out) is the
same number, so it is padded, as dkimpy's arithmetic treats it.

The body hash was compared before this is called (dkimcheck's ``_BodyHashes``), so the
body is not canonicalized a second time, as ``verify_sig`` would.

What a key record comes to (OpenSSL's key, or None for dkimpy to judge) depends on the
record's bytes alone, so it is kept, by those bytes, for the next message signed with the
same key: dkimpy's reading of a record (its ASN.1 parser in Python) cost more than
OpenSSL's check of the signature. A changed record is other bytes, so nothing kept can
outlive the key it was read from in DNS; at most :data:`KEYS_KEPT` are kept, none over
:data:`~qremote.verify.dnscache.MAX_RECORD` bytes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from qremote.verify.dnscache import MAX_RECORD

MIN_BITS = 1024
"""dkimpy's own minimum (``DKIM.minkey``): a smaller key is left to it, to refuse."""

KEYS_KEPT = 1000
"""Key records whose reading is kept, per process: about 2 KB each for a 2048-bit key,
at most 10 MB (docs/BOUNDS.md)."""

_SHA256 = Prehashed(hashes.SHA256())
_keys: dict[bytes, tuple[rsa.RSAPublicKey, int] | None] = {}
_keys_lock = threading.Lock()  # verifyd's worker threads share the keys


def verify(
    checker: dkim.DKIM,
    sig: dict[bytes, bytes],
    include: list[bytes],
    field: tuple[bytes, bytes],
    record: bytes,
) -> bool:
    """Whether the signature ``sig`` (the tags of ``field``, ``a=`` lowercase) over the
    fields ``include`` verifies with the key ``record`` (``v=DKIM1; k=...; p=...`` as
    dkimrules cleaned it). Raises what dkimpy's ``verify_sig`` raises."""
    fast = _prepared(sig, record)
    if fast is None:
        return bool(checker.verify_sig(sig, include, field, lambda _name, timeout=5: record))
    key, signature, policy = fast
    if b"from" in include:
        include.append(b"from")  # as dkimpy does: a second From: breaks the signature
    digest = hashlib.sha256()
    # Only the fields h= names are canonicalized: dkimpy canonicalizes each field on its
    # own and selects by the name lowercased (its names never hold white space), so the
    # fields selected, and their order, are those it would select from all of them.
    named = set(include)
    headers = policy.canonicalize_headers([f for f in checker.headers if f[0].lower() in named])
    dkim.hash_headers(digest, policy, headers, include, field, sig)
    try:
        key.verify(signature, digest.digest(), padding.PKCS1v15(), _SHA256)
    except InvalidSignature:
        return False
    return True


def _prepared(
    sig: dict[bytes, bytes], record: bytes
) -> tuple[rsa.RSAPublicKey, bytes, dkim.CanonicalizationPolicy] | None:
    """(the key, the signature as as many bytes as the modulus, the c= policy) when
    OpenSSL's answer is sure to be dkimpy's; None otherwise. The key is read by dkimpy
    (``evaluate_pk``, as ``verify_sig`` reads it), and OpenSSL is given its numbers, so
    a record the two would read differently cannot reach OpenSSL."""
    if sig.get(b"a") != b"rsa-sha256":
        return None
    try:
        policy = dkim.CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
    except Exception:  # noqa: BLE001 - a c= dkimpy refuses: dkimpy judges
        return None
    found = public_key(record)
    if found is None:
        return None
    key, n = found
    number = int.from_bytes(base64.b64decode(re.sub(rb"\s+", b"", sig[b"b"])), "big")
    if number >= n:
        return None
    return key, number.to_bytes((n.bit_length() + 7) // 8, "big"), policy


def public_key(record: bytes) -> tuple[rsa.RSAPublicKey, int] | None:
    """OpenSSL's key and its modulus for a record dkimpy reads as an RSA key of at least
    MIN_BITS; None for any other (kept, by the record's bytes, as the key is)."""
    with _keys_lock:
        if record in _keys:
            return _keys[record]
    key = _read(record)
    if len(record) <= MAX_RECORD:
        with _keys_lock:
            while len(_keys) >= KEYS_KEPT:
                del _keys[next(iter(_keys))]  # the oldest first
            _keys[record] = key
    return key


def _read(record: bytes) -> tuple[rsa.RSAPublicKey, int] | None:
    try:
        numbers, bits, kind, tlsrpt = dkim.evaluate_pk(b"", record)
        if kind != b"rsa" or tlsrpt or bits < MIN_BITS:
            return None
        n = numbers["modulus"]
        return rsa.RSAPublicNumbers(numbers["publicExponent"], n).public_key(), n
    except Exception:  # noqa: BLE001 - whatever dkimpy or OpenSSL refuse, dkimpy judges
        return None
