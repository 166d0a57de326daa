"""The ARC sets a message carries (RFC 8617): which fields, their instance numbers, and
whether they can form a chain at all.

Both halves of qremote read a chain: the inbound filter evaluates one into an ``arc=``
result (``verify/arccheck.py``), and the outbound signer adds the next set to one it
vouched for (``signing/arc.py``). The structure rule (sections 4.2.1 and 5.2 step 2) is
the same for both, so it lives here, over plain (name, value) pairs.
"""

from __future__ import annotations

import re

from qremote.limits import VERIFY_MAX_ARC_SETS

SEAL = b"seal"
SIGNATURE = b"message-signature"
RESULTS = b"authentication-results"
KINDS = (RESULTS, SIGNATURE, SEAL)
"""The three fields of a set, in the order an ARC-Seal covers them."""

MAX_INSTANCE = VERIFY_MAX_ARC_SETS
"""RFC 8617 section 4.2.1: instance numbers run from 1 to 50."""

FIELD = re.compile(rb"^arc-(seal|message-signature|authentication-results)\s*:", re.I)
_INSTANCE = re.compile(rb"(?:^|;)\s*i\s*=\s*([0-9]+)\s*(?=;|$)")
_CV = re.compile(rb"(?:^|;)\s*cv\s*=\s*([A-Za-z]+)\s*(?=;|$)")


def kind_of(field: bytes) -> tuple[bytes, bytes] | None:
    """(kind, value) of an ARC field given whole (``ARC-Seal: ...``), else None."""
    match = FIELD.match(field)
    if match is None:
        return None
    return match.group(1).lower(), field[match.end() :]


def instance(value: bytes) -> int | None:
    """The one ``i=`` of an ARC field's value; None when it has none, two, or one past
    :data:`MAX_INSTANCE` (a hostile number is never turned into a huge int)."""
    numbers = _INSTANCE.findall(value)
    if len(numbers) != 1 or len(numbers[0]) > 3 or not 1 <= int(numbers[0]) <= MAX_INSTANCE:
        return None
    return int(numbers[0])


def malformed(fields: list[tuple[bytes, bytes]]) -> str | None:
    """Why the sets cannot form a chain (RFC 8617 sections 4.2.1 and 5.2 step 2), before
    any key is looked up: every field has one instance number from 1 to 50, each
    instance has exactly one field of each kind, and the instances run 1 to N."""
    if sum(kind == SEAL for kind, _ in fields) > MAX_INSTANCE:
        return f"more than {MAX_INSTANCE} ARC sets"
    seen: dict[int, list[bytes]] = {}
    for kind, value in fields:
        numbers = _INSTANCE.findall(value)
        if not numbers:
            return "an ARC field without an instance number"
        if len(numbers) > 1:
            return "an ARC field with two instance numbers"
        number = instance(value)
        if number is None:
            return f"an instance number outside 1 to {MAX_INSTANCE}"
        seen.setdefault(number, []).append(kind)
    for i, kinds in sorted(seen.items()):
        if sorted(kinds) != sorted(KINDS):
            return f"ARC set {i} is not one field of each kind"
    if sorted(seen) != list(range(1, len(seen) + 1)):
        return "the ARC sets are not numbered 1 to N"
    return None


def by_instance(fields: list[tuple[bytes, bytes]]) -> dict[int, dict[bytes, bytes]]:
    """The sets of a well-formed chain (:func:`malformed` said None): instance to kind
    to the field's value."""
    sets: dict[int, dict[bytes, bytes]] = {}
    for kind, value in fields:
        number = instance(value)
        if number is not None:
            sets.setdefault(number, {})[kind] = value
    return sets


def chain_validation(seal_value: bytes) -> bytes | None:
    """The ``cv=`` an ARC-Seal states, lowercased (none, pass, fail), or None."""
    found = _CV.findall(seal_value.replace(b"\r\n", b""))
    return found[0].lower() if len(found) == 1 else None
