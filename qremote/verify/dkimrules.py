"""Which RFC 8601 result a DKIM signature gets before any cryptography: one table, pure.

RFC 6376 section 6.1 has a verifier check the signature's tags and then the key record
before it hashes anything; RFC 8601 section 2.7.1 names the results. dkimpy does the
cryptography (canonicalization, hashing, RSA and Ed25519), but its own checks turn every
problem into one exception, and some of them are wrong (a ``q=`` list with unknown
methods, a key record serving several services, a key's ``h=`` and ``t=s`` ignored). So
the checks are made here, each row of :data:`TABLE` with its result and the RFC's words,
and dkimpy only sees signatures and key records that passed them.

The results, as RFC 8601 section 2.7.1 defines them:

- ``fail``: the signature was acceptable and did not verify (dkimpy decides that);
- ``neutral``: "contained syntax errors or were not otherwise able to be processed": a
  version, algorithm, canonicalization or query method we do not know;
- ``policy``: signed, but "some aspect ... was not acceptable to the ADMD": an expired
  signature, a signature made with rsa-sha1 (RFC 8301 section 3.1: verifiers MUST NOT
  consider it valid), and, with ``control/dkimlength policy``, unsigned text after ``l=``;
- ``permerror``: "could not be verified due to some error that is unrecoverable": a
  missing or malformed required tag, ``i=`` outside ``d=``, From not signed, no key
  record, a revoked or unusable key, a key that forbids this hash or this use;
- ``temperror``: the key record could not be fetched now.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from qremote.signing.tags import parse_tags


@dataclass(frozen=True)
class Finding:
    result: str
    reason: str


TABLE: dict[str, tuple[str, str]] = {
    # signature (RFC 6376 sections 3.5 and 6.1.1)
    "tags": ("permerror", "the signature's tag list is malformed, RFC 6376 3.2"),
    "missing": ("permerror", "the signature lacks {tag}=, RFC 6376 6.1.1"),
    "version": ("neutral", "incompatible version v={value}, RFC 6376 6.1.1"),
    "algorithm": ("neutral", "unsupported algorithm a={value}"),
    "sha1": ("policy", "rsa-sha1 is not acceptable, RFC 8301 3.1"),
    "canonicalization": ("neutral", "unsupported canonicalization c={value}"),
    "query": ("neutral", "no supported query method in q={value}, RFC 6376 3.5"),
    "base64": ("permerror", "{tag}= is not base64"),
    "number": ("permerror", "{tag}= is not a decimal number"),
    "domain": ("permerror", "d= is not a domain name"),
    "identity": ("permerror", "i= is not in d= or a subdomain of it, RFC 6376 6.1.1"),
    "from": ("permerror", "the From field is not signed, RFC 6376 6.1.1"),
    "future": ("neutral", "t= is in the future"),
    "order": ("permerror", "x= is before t=, RFC 6376 3.5"),
    "expired": ("policy", "signature expired, x= has passed"),
    # key record (RFC 6376 section 3.6.1)
    "nokey": ("permerror", "no key record at {name}"),
    "keytags": ("permerror", "the key record's tag list is malformed"),
    "keyversion": ("permerror", "the key record's v= is not DKIM1, RFC 6376 3.6.1"),
    "nop": ("permerror", "the key record has no p="),
    "revoked": ("permerror", "key revoked, p= is empty"),
    "keytype": ("permerror", "unknown key type k={value}"),
    "keyalgorithm": ("permerror", "a= does not match the key type k={value}"),
    "keyhash": ("permerror", "the key allows only h={value}, RFC 6376 3.6.1"),
    "service": ("permerror", "the key is not for email: s={value}, RFC 6376 3.6.1"),
    "strict": ("permerror", "the key has t=s and i= is in a subdomain of d=, RFC 6376 3.6.1"),
}
"""Every verdict given before the cryptography: key, (result, reason template)."""

ALGORITHMS = {b"rsa-sha256": (b"rsa", b"sha256"), b"ed25519-sha256": (b"ed25519", b"sha256")}
CANONS = (b"simple", b"relaxed")
REQUIRED = (b"v", b"a", b"b", b"bh", b"d", b"h", b"s")
CLOCK_SLOP = 36000
"""Seconds a sender's clock may be off (dkimpy's 10 hours): a t= that far in the future,
an x= that far in the past, are still taken as the sender meant them."""

_BASE64 = re.compile(rb"^[A-Za-z0-9+/ \t\r\n]*={0,2}[ \t\r\n]*$")
_LABEL = rb"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_DOMAIN = re.compile(rb"^" + _LABEL + rb"(\." + _LABEL + rb")*\.?$")


def _finding(key: str, **values: object) -> Finding:
    result, template = TABLE[key]
    shown = {
        k: (v.decode("ascii", "replace") if isinstance(v, bytes) else v) for k, v in values.items()
    }
    return Finding(result, template.format(**shown))


def _tags(value: bytes) -> dict[bytes, bytes] | None:
    """The tags, or None when a tag appears twice (RFC 6376 3.2: invalid)."""
    names = [part.split(b"=", 1)[0].strip() for part in value.split(b";") if part.strip()]
    if len(names) != len(set(names)) or any(b"=" not in p for p in value.split(b";") if p.strip()):
        return None
    return parse_tags(value)


def _base64(text: bytes) -> bool:
    if not _BASE64.match(text):
        return False
    try:
        base64.b64decode(re.sub(rb"\s+", b"", text), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def signature_problem(value: bytes, now: int) -> tuple[Finding | None, dict[bytes, bytes]]:
    """(the verdict a DKIM-Signature field's value earns before its key is fetched, or None
    when it may go on; its tags)."""
    tags = _tags(value)
    if tags is None:
        return _finding("tags"), {}
    for tag in REQUIRED:
        if tag not in tags:
            return _finding("missing", tag=tag), tags
    if tags[b"v"] != b"1":
        return _finding("version", value=tags[b"v"]), tags
    algorithm = tags[b"a"].lower()
    if algorithm == b"rsa-sha1":
        return _finding("sha1"), tags
    if algorithm not in ALGORITHMS:
        return _finding("algorithm", value=tags[b"a"]), tags
    header_c, _, body_c = tags.get(b"c", b"simple/simple").lower().partition(b"/")
    if header_c not in CANONS or (body_c or b"simple") not in CANONS:
        return _finding("canonicalization", value=tags[b"c"]), tags
    if b"q" in tags and b"dns/txt" not in [m.strip().lower() for m in tags[b"q"].split(b":")]:
        return _finding("query", value=tags[b"q"]), tags
    for tag in (b"b", b"bh"):
        if not tags[tag].strip() or not _base64(tags[tag]):
            return _finding("base64", tag=tag), tags
    for tag in (b"l", b"t", b"x"):
        if tag in tags and not tags[tag].strip().isdigit():
            return _finding("number", tag=tag), tags
    domain = tags[b"d"].strip().lower()
    if not _DOMAIN.match(domain):
        return _finding("domain"), tags
    if b"i" in tags:
        identity_domain = tags[b"i"].rpartition(b"@")[2].strip().lower().rstrip(b".")
        if not (identity_domain == domain or identity_domain.endswith(b"." + domain)):
            return _finding("identity"), tags
    if b"from" not in [h.strip().lower() for h in tags[b"h"].split(b":")]:
        return _finding("from"), tags
    t = int(tags[b"t"]) if b"t" in tags else None
    x = int(tags[b"x"]) if b"x" in tags else None
    if t is not None and t > now + CLOCK_SLOP:
        return _finding("future"), tags
    if t is not None and x is not None and x < t:
        return _finding("order"), tags
    if x is not None and x + CLOCK_SLOP < now:
        return _finding("expired"), tags
    return None, tags


def key_problem(
    record: bytes | None, name: str, sig: dict[bytes, bytes]
) -> tuple[Finding | None, bytes]:
    """(the verdict the key record earns for this signature, or None; the record as dkimpy
    is to see it: only k= and p=, the tags it would otherwise judge by its own rules)."""
    if record is None:
        return _finding("nokey", name=name), b""
    tags = _tags(record)
    if tags is None:
        return _finding("keytags"), b""
    if b"v" in tags and tags[b"v"] != b"DKIM1":
        return _finding("keyversion"), b""
    if b"p" not in tags:
        return _finding("nop"), b""
    p = re.sub(rb"\s+", b"", tags[b"p"])
    if not p:
        return _finding("revoked"), b""
    k = tags.get(b"k", b"rsa").strip().lower()
    kinds = {kind for kind, _ in ALGORITHMS.values()}
    if k not in kinds:
        return _finding("keytype", value=k), b""
    kind, digest = ALGORITHMS[sig[b"a"].lower()]
    if kind != k:
        return _finding("keyalgorithm", value=k), b""
    if b"h" in tags:
        allowed = [h.strip().lower() for h in tags[b"h"].split(b":")]
        if digest not in allowed:
            return _finding("keyhash", value=tags[b"h"]), b""
    if b"s" in tags:
        services = [s.strip().lower() for s in tags[b"s"].split(b":")]
        if b"email" not in services and b"*" not in services:
            return _finding("service", value=tags[b"s"]), b""
    flags = [f.strip().lower() for f in tags.get(b"t", b"").split(b":")]
    if b"s" in flags and b"i" in sig:
        identity_domain = sig[b"i"].rpartition(b"@")[2].strip().lower().rstrip(b".")
        if identity_domain != sig[b"d"].strip().lower().rstrip(b"."):
            return _finding("strict"), b""
    return None, b"v=DKIM1; k=" + k + b"; p=" + p
