"""ARC sealing of forwarded mail (RFC 8617 section 5.1): the next ARC set on a message
that came in through our filter and now leaves again.

Whether a message is ours to seal is read from the message alone. It carries an
Authentication-Results field of our authserv-id only if qremote-dkimverify queued it:
that filter writes one on every message and renames every other field claiming our id
(RFC 8601 section 5). The new set copies that field's results into the
ARC-Authentication-Results and takes ``cv=`` from its ``arc=`` result, the verdict we
reached on the chain when the message came in:

- no ARC field on the message: ``i=1; cv=none``;
- a chain we found to pass: the next instance, ``cv=pass``, the seal covering every
  earlier set;
- a chain we found to fail, or one that is no longer a chain: ``cv=fail``, the seal
  covering only its own set (section 5.1.2);
- no set at all when the newest seal already says ``cv=fail`` (section 5.1: the chain
  has ended), when there are 50 sets already, when our field has no ``arc=`` verdict for
  the chain the message carries, or when the domain has no RSA key (the only algorithm
  both independent verifiers take for ARC).

The ARC-Message-Signature is made like our DKIM-Signature (the same fields, relaxed/
relaxed, the same body hash when DKIM's body canonicalization is relaxed too); the
ARC-Seal covers the ARC fields only. Everything here is pure: no DNS, no files.
"""

from __future__ import annotations

from dataclasses import dataclass

from qremote import arcchain, authres
from qremote.limits import ARC_RESULTS_BYTES
from qremote.signing import canon, dkim
from qremote.signing.keys import SigningKey
from qremote.signing.message import Header, Message

CANON = "relaxed"
"""Of both ARC signatures' header fields (the ARC-Seal's is fixed by RFC 8617 5.1.1) and
of the ARC-Message-Signature's body."""

_NAMES = {
    arcchain.RESULTS: b"ARC-Authentication-Results",
    arcchain.SIGNATURE: b"ARC-Message-Signature",
    arcchain.SEAL: b"ARC-Seal",
}


@dataclass(frozen=True)
class Plan:
    """The set to add."""

    instance: int
    cv: bytes
    """``none``, ``pass`` or ``fail``."""
    results: bytes
    """Our Authentication-Results value (authserv-id first), folds kept, no final CRLF."""
    covered: list[Header]
    """The earlier ARC fields the seal covers, in order: AAR, AMS, AS of instance 1, 2..."""


def plan(message: Message, ours: str) -> Plan | str | None:
    """The set to add; a reason when a message that came in through us is not sealed;
    None when it did not come in through us (nothing to say)."""
    ours_id = ours.lower().encode()
    mine = [
        h
        for h in message.get(b"authentication-results")
        if authres.authserv_id_of(h.value) == ours_id
    ]
    if not mine:
        return None
    results = mine[0].value.strip(b" \t\r\n")  # the newest: the filter puts it on top
    if len(results) > ARC_RESULTS_BYTES:
        return f"our Authentication-Results field is longer than {ARC_RESULTS_BYTES} bytes"
    fields = [h for h in message.headers if h.key.startswith(b"arc-") and h.key[4:] in _NAMES]
    if not fields:
        return Plan(1, b"none", results, [])
    pairs = [(h.key[4:], h.value[:-2]) for h in fields]
    broken = arcchain.malformed(pairs) is not None
    if not broken:
        sets = arcchain.by_instance(pairs)
        newest = max(sets)
        if arcchain.chain_validation(sets[newest][arcchain.SEAL]) == b"fail":
            return f"the chain already failed (cv=fail at i={newest}), which ends it"
    highest = max((n for _, value in pairs if (n := arcchain.instance(value))), default=0)
    if highest >= arcchain.MAX_INSTANCE:
        return f"the chain has {arcchain.MAX_INSTANCE} sets already"
    said = [result for method, result in authres.results(results) if method == "arc"]
    if broken or said == ["fail"]:
        return Plan(highest + 1, b"fail", results, [])
    if said != ["pass"]:
        return "our Authentication-Results field has no arc= verdict on the chain it carries"
    order = {kind: n for n, kind in enumerate(arcchain.KINDS)}
    covered = sorted(fields, key=lambda h: (arcchain.instance(h.value[:-2]), order[h.key[4:]]))
    return Plan(highest + 1, b"pass", results, covered)


def seal(
    message: Message, planned: Plan, domain: str, key: SigningKey, now: int, bh: bytes | None
) -> bytes:
    """ARC-Seal, ARC-Message-Signature and ARC-Authentication-Results, in that order (the
    order they are put above the message), CRLF line ends. ``bh``: the body hash under
    relaxed canonicalization when already made, else None."""
    i = b"i=%d" % planned.instance
    a, d, s = (
        b"a=" + key.algorithm.encode(),
        b"d=" + domain.encode(),
        b"s=" + key.selector.encode(),
    )
    t = b"t=%d" % now
    header_canon = canon.DKIM_HEADER[CANON]

    name = _NAMES[arcchain.RESULTS]
    aar = Header(name, name + b": " + i + b"; " + planned.results + b"\r\n")

    name = _NAMES[arcchain.SIGNATURE]
    names = dkim.header_list(message)
    body = bh or dkim.body_hash(message, CANON)
    tags = [i, a, b"c=relaxed/relaxed", d, s, t, b"h=" + b":".join(names), b"bh=" + body, b"b="]
    covered = b"".join(header_canon(h) for h in dkim.selected(message, names))
    ams = Header(name, dkim.signed_field(name, tags, covered, key, CANON))

    name = _NAMES[arcchain.SEAL]
    tags = [i, a, t, b"cv=" + planned.cv, d, s, b"b="]
    covered = b"".join(header_canon(h) for h in [*planned.covered, aar, ams])
    arc_seal = dkim.signed_field(name, tags, covered, key, CANON)
    return arc_seal + ams.raw + aar.raw


def rsa_key(keys: list[SigningKey]) -> SigningKey | None:
    """The key ARC signs with: the domain's first RSA key."""
    return next((k for k in keys if k.is_rsa), None)
