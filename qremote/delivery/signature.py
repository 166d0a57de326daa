"""Steps 1 and 3 of a delivery: what can never be sent is refused before anything else
(a partial final line, an envelope no server can be given, a source address that is not
ours), then the message is signed (:mod:`qremote.signing`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from qremote import report
from qremote.control import ControlError
from qremote.delivery.outcome import Notes, Outcome
from qremote.metrics.trace import Trace
from qremote.routing import source
from qremote.settings import Settings
from qremote.signing.sign import SigningError, Unsignable, sign_message, store_for
from qremote.smtp import addresses
from qremote.smtp.body import has_partial_final_line
from qremote.tlsrpt.report import is_tls_report


@dataclass(frozen=True)
class Signature:
    """A message ready to go: the envelope, the source it goes from, and its parts, the
    signature fields and the queue file, sent one after the other (never joined)."""

    sender: bytes
    recipients: list[bytes]
    origin: source.Source
    parts: tuple[bytes, ...]
    notes: Notes
    """What was signed, for every report from a remote host."""
    lenient: bool = False
    """One of our TLS reports (RFC 8460 section 5.3.1): delivered without DANE or
    MTA-STS, whose failures it may be reporting."""


def sign(
    settings: Settings, sender: bytes, recipients: list[bytes], message: bytes, trace: Trace
) -> Signature | Outcome:
    """The signed message, or the report that ends the delivery before any connection.
    What was signed, and how long it took, goes into ``trace``."""
    if has_partial_final_line(message):
        return Outcome.final(report.PARTIAL_LINE)
    unsendable = _unsendable(sender, recipients)
    if unsendable is not None:
        return unsendable
    origin = source.source_for(sender, settings.bindings, settings.outgoing_ip, settings.helo)
    try:
        source.check_local(origin)
    except ControlError as e:
        return Outcome.final(report.control_error(str(e)))
    started = time.perf_counter()
    try:
        signed = sign_message(message, sender, store_for(settings.control.path), settings.signing)
    except SigningError as e:
        return Outcome.final(report.sign_error(str(e)))
    except Unsignable as e:
        trace.unsigned = "unsignable"
        return Outcome.final(report.unsignable(str(e)))
    finally:
        trace.sign_seconds = time.perf_counter() - started
    trace.signatures, trace.unsigned = signed.algorithms, signed.unsigned
    lenient = is_tls_report(message, sender, settings.tlsrpt_contact)
    parts = (signed.headers, message)
    return Signature(sender, recipients, origin, parts, Notes([signed.note]), lenient)


def _unsendable(sender: bytes, recipients: list[bytes]) -> Outcome | None:
    """A sender, or every recipient, that no server can ever be given: permanent at once.
    (Some recipients alone: the conversation refuses those and sends the rest.)"""
    why = addresses.fault(sender)
    if why is not None:
        return Outcome.final(report.bad_sender(why))
    faults = [addresses.fault(r) for r in recipients]
    if recipients and all(faults):
        return Outcome([report.bad_recipient(f) for f in faults if f], report.NO_SENDABLE_RECIPIENT)
    return None
