"""ARC (RFC 8617): the chain of custody a forwarder put on a message, evaluated as
section 5.2 says (structure, instance numbers, the last ARC-Message-Signature, every
ARC-Seal, the chain's ``cv=``) into one ``arc=`` result for our Authentication-Results.

A message without any ARC field gets no ``arc`` result at all (nothing to say; the field
stays as it was). The chain is read by dkimpy (``dkim.arc_verify``); what reaches it is
bounded first: more than :data:`~qremote.limits.VERIFY_MAX_ARC_SETS` sets, or an
instance number past it, fail at once; its key look-ups go through the message's DNS
budget (``dkimverifytimeout``), and a look-up that could not be made fails the chain with
that reason (RFC 8617's results are pass, fail and none only). Whatever dkimpy raises is
a ``fail`` with the reason, never a lost message.
"""

from __future__ import annotations

import logging
import re

import dkim

from qremote.limits import VERIFY_MAX_ARC_SETS
from qremote.verify.dkimcheck import header_fields
from qremote.verify.results import Result
from qremote.verify.txt import DnsTemporary, TxtLookup

_ARC_FIELD = re.compile(rb"^arc-(seal|message-signature|authentication-results)\s*:", re.I)
_INSTANCE = re.compile(rb"(?:^|;)\s*i\s*=\s*([0-9]+)\s*(?=;|$)")


def _arc_fields(message: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, value) of every ARC field of the header block."""
    found = []
    for field in header_fields(message):
        match = _ARC_FIELD.match(field)
        if match:
            found.append((match.group(1).lower(), field[match.end() :]))
    return found


def malformed(fields: list[tuple[bytes, bytes]]) -> str | None:
    """Why the sets cannot form a chain (RFC 8617 sections 4.2.1 and 5.2 step 2), before
    any key is looked up: every field has one instance number from 1 to 50, each
    instance has exactly one field of each kind, and the instances run 1 to N."""
    if sum(name == b"seal" for name, _ in fields) > VERIFY_MAX_ARC_SETS:
        return f"more than {VERIFY_MAX_ARC_SETS} ARC sets"
    seen: dict[int, list[bytes]] = {}
    for name, value in fields:
        numbers = _INSTANCE.findall(value)
        if not numbers:
            return "an ARC field without an instance number"
        if len(numbers) > 1:
            return "an ARC field with two instance numbers"
        if len(numbers[0]) > 3 or not 1 <= int(numbers[0]) <= VERIFY_MAX_ARC_SETS:
            return f"an instance number outside 1 to {VERIFY_MAX_ARC_SETS}"
        seen.setdefault(int(numbers[0]), []).append(name)
    for i, names in sorted(seen.items()):
        if sorted(names) != [b"authentication-results", b"message-signature", b"seal"]:
            return f"ARC set {i} is not one field of each kind"
    if sorted(seen) != list(range(1, len(seen) + 1)):
        return "the ARC sets are not numbered 1 to N"
    return None


def verify(message: bytes, lookup: TxtLookup) -> list[Result]:
    """[] without ARC fields; else the chain's one result."""
    fields = _arc_fields(message)
    if not fields:
        return []
    why = malformed(fields)
    if why is not None:
        return [Result("arc", "fail", why)]
    failed: list[str] = []

    def record(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            return lookup.txt(text.rstrip("."))
        except DnsTemporary as e:
            failed.append(f"key lookup: {e}")
            return None

    logger = logging.Logger("qremote.arcverify")  # not registered: nothing accumulates
    logger.propagate = False
    logger.setLevel(logging.CRITICAL)
    try:
        cv, sets, reason = dkim.arc_verify(message, logger=logger, dnsfunc=record)
    except Exception as e:  # noqa: BLE001 - a broken chain or a verifier bug: fail, say why
        return [Result("arc", "fail", f"chain not readable: {e.__class__.__name__}")]
    if failed and cv != dkim.CV_Pass:
        return [Result("arc", "fail", failed[0])]
    result = {dkim.CV_Pass: "pass", dkim.CV_None: "none"}.get(cv, "fail")
    said = _sets(sets)
    if result != "pass":
        text = reason if isinstance(reason, str) else str(reason)
        said = f"{text[:200]}, {said}" if said else text[:200]
    return [Result("arc", result, said)]


RESULTS_SAID = 4
"""Results named in the comment: the newest message signature and the newest seals (RFC
8617 appendix B's form; the comment is cut at 200 characters anyway)."""


def _sets(sets: list[dict[str, object]]) -> str:
    """``as.2.example.org=pass, ams.2.example.org=pass, as.1.lists.example=pass``."""
    parts = []
    newest = True
    for s in sorted(sets, key=lambda s: -int(str(s.get("instance", 0)))):
        i = s.get("instance")
        as_domain = _text(s.get("as-domain"))
        parts.append(f"as.{i}.{as_domain}={'pass' if s.get('as-valid') else 'fail'}")
        if newest:  # only the newest ARC-Message-Signature is checked (RFC 8617 5.2)
            ams_domain = _text(s.get("ams-domain"))
            parts.append(f"ams.{i}.{ams_domain}={'pass' if s.get('ams-valid') else 'fail'}")
            newest = False
    more = len(parts) - RESULTS_SAID
    return ", ".join(parts[:RESULTS_SAID]) + (f", {more} more" if more > 0 else "")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value) if value is not None else "?"
