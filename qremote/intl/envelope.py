"""What to send one server, given what it offers: SMTPUTF8 or a downgrade (pure).

RFC 6531: a message whose envelope (sender, or a recipient's local part) or header
fields hold non-ASCII needs SMTPUTF8. Per server (the next MX may offer it):

- It offers SMTPUTF8: ``MAIL FROM:<...> SMTPUTF8`` (with ``BODY=8BITMIME`` when offered),
  addresses as qmail-send gave them; IDN domains go in that U-label form.
- It does not, and only domains are non-ASCII: they go in their A-label form, without
  SMTPUTF8 (RFC 6531 section 3.2 allows this downgrade).
- It does not, and a local part is non-ASCII: no such address is sent. A recipient whose
  local part is non-ASCII is refused permanently (``5.6.7``); if the sender's local part,
  or every recipient, needs SMTPUTF8, this server cannot take the message at all (the next
  MX is tried; ``D`` when none can).
- Header fields that are not ASCII go as qmail sends them, with a note in the report
  (``control/utf8headers`` ``send``, the default: legacy 8-bit text in a Subject is
  common, and qmail cannot know whether the sender asked for SMTPUTF8); ``bounce`` makes
  them need SMTPUTF8 like a non-ASCII local part (the server cannot take the message; the
  next MX may).
- Whatever the server offers, an address that can never be sent
  (:func:`qremote.smtp.addresses.fault`: CR, LF or NUL, or a local part that is not
  UTF-8) is not: the recipient is refused, the sender makes the message unsendable.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from qremote.intl.idn import IdnError, ascii_address
from qremote.smtp.addresses import Fault, fault


@dataclass(frozen=True)
class Plan:
    smtputf8: bool
    sender: bytes
    recipients: list[bytes | None]
    """The form to send each recipient in; None: refused here (5.6.7, or for a fault)."""
    refusal: str | None = None
    """Why this server cannot take the message at all."""
    raw_headers: bool = False
    """Header fields that are not ASCII go without SMTPUTF8, as qmail sends them."""
    faults: dict[int, Fault] = field(default_factory=dict)
    """Recipients refused whatever the server offers, and why (qremote.smtp.addresses)."""


def plan_envelope(
    sender: bytes,
    recipients: list[bytes],
    utf8_headers: bool,
    offered: bool,
    strict_headers: bool = True,
) -> Plan:
    faults = {i: why for i, r in enumerate(recipients) if (why := fault(r)) is not None}
    chosen = _plan(sender, recipients, utf8_headers, offered, strict_headers)
    if not faults or chosen.refusal is not None:
        return chosen
    forms = [None if i in faults else form for i, form in enumerate(chosen.recipients)]
    if all(f is None for f in forms):
        return replace(chosen, recipients=[], refusal="no recipient's address can be sent")
    return replace(chosen, recipients=forms, faults=faults)


def _plan(
    sender: bytes,
    recipients: list[bytes],
    utf8_headers: bool,
    offered: bool,
    strict_headers: bool,
) -> Plan:
    if fault(sender) is not None:
        return Plan(False, sender, [], "the sender's address can never be sent")
    envelope_ascii = sender.isascii() and all(r.isascii() for r in recipients)
    if envelope_ascii and not utf8_headers:
        return Plan(False, sender, list(recipients))
    if offered:
        return Plan(True, sender, list(recipients))
    if utf8_headers and strict_headers:
        return Plan(False, sender, [], "the message's header fields are not ASCII")
    if envelope_ascii:
        return Plan(False, sender, list(recipients), raw_headers=True)
    try:
        downgraded_sender = ascii_address(sender)
    except IdnError:
        downgraded_sender = None
    if downgraded_sender is None:
        return Plan(False, sender, [], "the sender's address is not ASCII")
    forms: list[bytes | None] = []
    for rcpt in recipients:
        try:
            forms.append(ascii_address(rcpt))
        except IdnError:
            forms.append(None)
    if all(f is None for f in forms):
        return Plan(False, sender, [], "no recipient's address is ASCII")
    return Plan(False, downgraded_sender, forms, raw_headers=utf8_headers)
