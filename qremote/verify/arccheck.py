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

import dkim

from qremote import arcchain
from qremote.verify.dkimcheck import header_fields
from qremote.verify.results import Result
from qremote.verify.txt import DnsTemporary, TxtLookup


def _arc_fields(message: bytes) -> list[tuple[bytes, bytes]]:
    """(kind, value) of every ARC field of the header block."""
    found = (arcchain.kind_of(field) for field in header_fields(message))
    return [pair for pair in found if pair is not None]


def verify(message: bytes, lookup: TxtLookup, remote_ip: str | None = None) -> list[Result]:
    """[] without ARC fields; else the chain's one result, with ``smtp.remote-ip`` (the
    client's address, when qmail-smtpd's tcpserver said it) and, for a chain that
    passes, ``header.oldest-pass`` (RFC 8617 sections 5.2 and 10.1)."""
    fields = _arc_fields(message)
    if not fields:
        return []
    remote = {"smtp.remote-ip": remote_ip} if remote_ip else {}
    why = arcchain.malformed(fields)
    if why is not None:
        return [Result("arc", "fail", why, remote)]
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
        return [Result("arc", "fail", f"chain not readable: {e.__class__.__name__}", remote)]
    if failed and cv != dkim.CV_Pass:
        return [Result("arc", "fail", failed[0], remote)]
    result = {dkim.CV_Pass: "pass", dkim.CV_None: "none"}.get(cv, "fail")
    said = _sets(sets)
    if result != "pass":
        text = reason if isinstance(reason, str) else str(reason)
        said = f"{text[:200]}, {said}" if said else text[:200]
        return [Result("arc", result, said, remote)]
    return [Result("arc", result, said, {"header.oldest-pass": str(oldest_pass(sets)), **remote})]


def oldest_pass(sets: list[dict[str, object]]) -> int:
    """RFC 8617 section 5.2 step 6: the oldest instance from which every newer
    ARC-Message-Signature still validates; 0 when all of them do (the message is as the
    first forwarder saw it). dkimpy checks every set's AMS; this reads its findings."""
    valid = {int(str(s.get("instance", 0))): bool(s.get("ams-valid")) for s in sets}
    newest = max(valid, default=0)
    for i in range(newest - 1, 0, -1):
        if not valid.get(i):
            return i + 1
    return 0


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
