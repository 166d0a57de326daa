"""DomainKeys verification (RFC 4870) on the canonicalization shared with the signer.

A DomainKey-Signature covers the fields that follow it (with ``h=``: those named, every
occurrence of a name together, in ``h=`` order) and the body. The signing domain ``d=``
must be the domain of the Sender: field if there is one, else of From:, or a parent of it.
"""

from __future__ import annotations

import base64
import binascii
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from qremote.limits import VERIFY_MAX_DOMAINKEYS_SIGNATURES
from qremote.signing import canon
from qremote.signing.choose import domain_of
from qremote.signing.message import Header, MalformedMessage, Message, parse
from qremote.signing.tags import parse_tags
from qremote.verify.results import TIME_SPENT, Result, past_the_count
from qremote.verify.txt import DnsTemporary, TxtLookup


def _covered(after: list[Header], names: list[bytes] | None) -> list[Header]:
    if names is None:
        return after
    by_name: dict[bytes, list[Header]] = {}
    for h in after:
        by_name.setdefault(h.key, []).append(h)
    out: list[Header] = []
    seen: set[bytes] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        out.extend(by_name.get(name, []))
    return out


def _signature_result(msg: Message, index: int, lookup: TxtLookup) -> Result:
    sig_header = msg.headers[index]
    tags = parse_tags(sig_header.value)
    domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
    selector = tags.get(b"s", b"").decode("ascii", "replace")
    c = tags.get(b"c", b"simple").decode("ascii", "replace").lower()
    props = {"header.d": domain, "header.s": selector, "header.a": "rsa-sha1"}
    after = msg.headers[index + 1 :]
    identity_fields = [h for h in after if h.key == b"sender"] or [
        h for h in after if h.key == b"from"
    ]
    identity = domain_of(identity_fields[0].value) if identity_fields else None
    if identity_fields:
        props["header.from"] = identity or ""
    if tags.get(b"a", b"rsa-sha1").lower() != b"rsa-sha1" or c not in ("simple", "nofws"):
        return Result("domainkeys", "permerror", "unsupported a= or c=", props)
    query = tags.get(b"q", b"dns").lower()
    if query != b"dns":
        # RFC 4870 section 3.3 defines q=dns only; like an unknown DKIM q= (RFC 8601
        # section 2.7.1: "not otherwise able to be processed").
        why = f"unsupported query method q={query.decode('ascii', 'replace')}, RFC 4870 3.3"
        return Result("domainkeys", "neutral", why, props)
    if not domain or not selector or b"b" not in tags:
        return Result("domainkeys", "permerror", "signature lacks d=, s= or b=", props)
    if identity is None or not (identity == domain or identity.endswith("." + domain)):
        return Result("domainkeys", "permerror", "d= does not match the sender", props)
    try:
        record = lookup.txt(f"{selector}._domainkey.{domain}")
    except DnsTemporary as e:
        return Result("domainkeys", "temperror", f"key lookup: {e}", props)
    if record is None:
        return Result("domainkeys", "permerror", "no key published", props)
    key_tags = parse_tags(record)
    p = key_tags.get(b"p")
    if p is None:
        return Result("domainkeys", "permerror", "key record has no p=", props)
    if not p:
        return Result("domainkeys", "permerror", "key revoked", props)
    try:
        key = serialization.load_der_public_key(base64.b64decode(p))
        signature = base64.b64decode(tags[b"b"])
    except (ValueError, binascii.Error) as e:
        return Result("domainkeys", "permerror", f"unusable key or signature: {e}", props)
    if not isinstance(key, rsa.RSAPublicKey):
        return Result("domainkeys", "permerror", "key is not RSA", props)
    if key.key_size < 1024:
        return Result("domainkeys", "permerror", f"key too short ({key.key_size} bits)", props)
    names = None
    if b"h" in tags:
        names = [n.strip().lower() for n in tags[b"h"].split(b":") if n.strip()]
    data = b"".join(canon.dk_header(h, c) for h in _covered(after, names))
    data += canon.dk_body(msg.body, c, msg.bare_cr)
    try:
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA1())
    except InvalidSignature:
        return Result("domainkeys", "fail", "signature did not verify", props)
    return Result("domainkeys", "pass", "", props)


def verify(message: bytes, lookup: TxtLookup) -> list[Result]:
    try:
        msg = parse(message)
    except MalformedMessage as e:
        if b"domainkey-signature:" in message.lower():
            return [Result("domainkeys", "permerror", f"message: {e}")]
        return []
    results = []
    for n, i in enumerate(i for i, h in enumerate(msg.headers) if h.key == b"domainkey-signature"):
        if n >= VERIFY_MAX_DOMAINKEYS_SIGNATURES:
            why = past_the_count(VERIFY_MAX_DOMAINKEYS_SIGNATURES)
            results.append(Result("domainkeys", "neutral", why))
        elif time.monotonic() >= lookup.deadline:
            why = TIME_SPENT
            results.append(Result("domainkeys", "temperror", why))
        else:
            results.append(_signature_result(msg, i, lookup))
    return results
