"""Envelope addresses that can never be sent, found before any connection (pure).

qmail-send takes its addresses from the queue, and qmail-smtpd cannot put CR, LF or NUL
into one; but any local program may call qmail-queue, so qmail-remote's arguments are
input like any other. An address holding CR or LF would become two SMTP commands
(``RCPT TO:<a@b>\\r\\nRCPT TO:<evil@...>``), and NUL cannot be sent at all. A local part
that is not valid UTF-8 cannot go under SMTPUTF8 (RFC 6531 section 3.3 requires UTF-8),
and without SMTPUTF8 no non-ASCII local part can go: it can never be delivered, so it is
refused permanently at once rather than after asking every MX.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    why: str
    """Words for the report, completing "The recipient's address ..."."""
    status: str
    """The enhanced status code (RFC 3463)."""


MALFORMED = Fault("holds CR, LF or NUL", "5.1.3")
NOT_UTF8 = Fault("is not ASCII and not valid UTF-8, so not even SMTPUTF8 can carry it", "5.6.7")


def fault(address: bytes) -> Fault | None:
    """Why ``address`` can never be sent; None: it may be."""
    if b"\r" in address or b"\n" in address or b"\0" in address:
        return MALFORMED
    if not address.isascii():
        try:
            address.decode("utf-8")
        except UnicodeDecodeError:
            return NOT_UTF8
    return None
