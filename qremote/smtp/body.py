"""Message body transfer encoding for DATA (RFC 5321 section 4.5.2), as qmail's blast().

Lines end in LF in the queue; on the wire they end in CRLF. A CRLF already present counts
as one line end (not CR CR LF as qmail would send). A line starting with '.' gets one more.
The message must end with a line end: qmail refuses a partial final line permanently.
"""

from __future__ import annotations


class PartialFinalLine(Exception):
    """The message does not end with LF; SMTP cannot carry it (qmail: #5.6.2)."""


def has_partial_final_line(message: bytes) -> bool:
    return bool(message) and not message.endswith(b"\n")


def encode_body(message: bytes) -> bytes:
    """The DATA payload including the terminating ``.\\r\\n``."""
    if has_partial_final_line(message):
        raise PartialFinalLine
    if not message:
        return b".\r\n"
    if b"\r\n" in message:  # rare in a queue file: avoid the extra copy otherwise
        message = message.replace(b"\r\n", b"\n")
    text = message.replace(b"\n", b"\r\n")
    if text.startswith(b"."):
        text = b"." + text
    text = text.replace(b"\r\n.", b"\r\n..")
    return text + b".\r\n"


def is_eight_bit(message: bytes) -> bool:
    """Whether BODY=8BITMIME applies: any byte above 127."""
    return not message.isascii()
