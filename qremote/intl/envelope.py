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
- Header fields alone that are not ASCII do not make a message need SMTPUTF8: qmail cannot
  know whether its sender asked for it, and such fields are far more often legacy 8-bit
  text than RFC 6532 UTF-8. They use SMTPUTF8 where it is offered, and otherwise go as
  qmail sends them (as Postfix does by default), with a note in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

from qremote.intl.idn import IdnError, ascii_address


@dataclass(frozen=True)
class Plan:
    smtputf8: bool
    sender: bytes
    recipients: list[bytes | None]
    """The form to send each recipient in; None: refused here (5.6.7)."""
    refusal: str | None = None
    """Why this server cannot take the message at all."""
    raw_headers: bool = False
    """Header fields that are not ASCII go without SMTPUTF8, as qmail sends them."""


def plan(
    sender: bytes, recipients: list[bytes], utf8_headers: bool, offered: bool
) -> Plan:
    envelope_ascii = sender.isascii() and all(r.isascii() for r in recipients)
    if envelope_ascii and not utf8_headers:
        return Plan(False, sender, list(recipients))
    if offered:
        return Plan(True, sender, list(recipients))
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
