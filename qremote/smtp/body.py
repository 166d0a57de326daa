"""Message body transfer encoding for DATA (RFC 5321 section 4.5.2), as qmail's blast().

Lines end in LF in the queue; on the wire they end in CRLF. A CRLF already present counts
as one line end (not CR CR LF as qmail would send). A line starting with '.' gets one more.
The message must end with a line end: qmail refuses a partial final line permanently.
"""

from __future__ import annotations

from collections.abc import Iterator


class PartialFinalLine(Exception):
    """The message does not end with LF; SMTP cannot carry it (qmail: #5.6.2)."""


def has_partial_final_line(message: bytes) -> bool:
    return bool(message) and not message.endswith(b"\n")


PIECE = 1 << 16


class Body:
    """The DATA payload of ``parts`` (the signature fields, then the queue file), encoded
    a piece at a time while it is sent, so a long-lived qremoted holds each message once,
    not three times. Every part must end with a line end.
    """

    def __init__(self, *parts: bytes) -> None:
        self.parts = [p for p in parts if p]
        if any(has_partial_final_line(p) for p in self.parts):
            raise PartialFinalLine
        self.size = 3 + sum(_encoded_size(p) for p in self.parts)
        """Bytes on the wire, final dot included: the SIZE= of MAIL FROM (RFC 1870)."""

    def pieces(self) -> Iterator[bytes]:
        """The encoded payload without the final ``.\r\n``, in pieces of about 64 KB."""
        for part in self.parts:
            view = memoryview(part)
            start = 0
            while start < len(part):
                end = part.find(b"\n", min(start + PIECE, len(part)) - 1) + 1 or len(part)
                yield _encode_lines(bytes(view[start:end]))
                start = end


def _encoded_size(part: bytes) -> int:
    """len(_encode_lines(part)), counted without building it."""
    lf, crlf = part.count(b"\n"), part.count(b"\r\n")
    dots = part.count(b"\n.") + part.startswith(b".")
    return len(part) - crlf + lf + dots


def _encode_lines(lines: bytes) -> bytes:
    """Whole lines, from a line start: LF to CRLF (an existing CRLF kept as one line end),
    a leading '.' doubled."""
    if b"\r\n" in lines:  # rare in a queue file: avoid the extra copy otherwise
        lines = lines.replace(b"\r\n", b"\n")
    text = lines.replace(b"\n", b"\r\n")
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\r\n.", b"\r\n..")


def encode_body(message: bytes) -> bytes:
    """The DATA payload including the terminating ``.\\r\\n``."""
    return b"".join(Body(message).pieces()) + b".\r\n"


def is_eight_bit(message: bytes) -> bool:
    """Whether BODY=8BITMIME applies: any byte above 127."""
    return not message.isascii()


def header_block(message: bytes) -> bytes:
    """The header fields of a queued message (LF line ends): up to the first empty line."""
    if message.startswith(b"\n"):
        return b""
    end = message.find(b"\n\n")
    return message if end < 0 else message[:end]
