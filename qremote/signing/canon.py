"""Canonicalization for DKIM (RFC 6376 section 3.4) and DomainKeys (RFC 4870 section 3.4).

One module serves both, because both reduce to the same few operations on CRLF text:
unfolding, squeezing white space, and dropping empty lines at the end of the body.
"""

from __future__ import annotations

import re

from qremote.signing.message import Header

_FOLD = re.compile(rb"\r\n(?=[ \t])")
_LONE_CR = re.compile(rb"\r(?!\n)")


def _squeeze(text: bytes) -> bytes:
    """Every run of SP/HTAB becomes one SP (with bytes.replace: far faster than re)."""
    if b"\t" in text:
        text = text.replace(b"\t", b" ")
    while b"  " in text:
        text = text.replace(b"  ", b" ")
    return text


def _strip_trailing_empty_lines(body: bytes) -> bytes:
    """Reduce any run of CRLFs at the end to one (the body's last line end)."""
    end = len(body)
    while body.endswith(b"\r\n", 0, end) and body.endswith(b"\r\n", 0, end - 2):
        end -= 2
    return body[:end]


# -- DKIM ----------------------------------------------------------------------------------


def dkim_header_simple(header: Header) -> bytes:
    return header.raw


def dkim_header_relaxed(header: Header) -> bytes:
    """Lowercase name, unfold, squeeze white space, trim around the colon and the end."""
    value = header.value
    if value.endswith(b"\r\n"):
        value = value[:-2]
    if b"\n" in value:  # folded
        value = _FOLD.sub(b"", value)
    value = _squeeze(value).strip(b" ")
    return header.key + b":" + value + b"\r\n"


def dkim_body_simple(body: bytes) -> bytes:
    """Trailing empty lines removed; an empty body is one CRLF."""
    if not body:
        return b"\r\n"
    body = _strip_trailing_empty_lines(body)
    return body if body.endswith(b"\r\n") else body + b"\r\n"


def dkim_body_relaxed(body: bytes) -> bytes:
    """White space squeezed within lines and removed at line ends; an empty body is empty
    (RFC 6376 errata 1384 order: squeeze first, then drop trailing empty lines)."""
    if not body:
        return b""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = _squeeze(body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    body = _strip_trailing_empty_lines(body)
    return b"" if body == b"\r\n" else body


DKIM_HEADER = {"simple": dkim_header_simple, "relaxed": dkim_header_relaxed}
DKIM_BODY = {"simple": dkim_body_simple, "relaxed": dkim_body_relaxed}


# -- DomainKeys -----------------------------------------------------------------------------


def dk_header(header: Header, canon: str) -> bytes:
    if canon == "nofws":
        return header.raw.translate(None, b" \t\r\n") + b"\r\n"
    return header.raw


def dk_body(body: bytes, canon: str, bare_cr: bool | None = None) -> bytes:
    """The empty separator line and the body; trailing empty lines are ignored, and with
    them the separator itself when nothing follows it. ``bare_cr`` says whether the body
    has a CR outside a CRLF, when the caller knows (:attr:`Message.bare_cr`)."""
    text = b"\r\n" + body
    if body and not body.endswith(b"\r\n"):
        # A partial final line goes out with a line end (SMTP cannot send it otherwise),
        # and that is what the receiver verifies; DKIM's rules say the same.
        text += b"\r\n"
    if canon == "nofws":
        text = text.translate(None, b" \t")
        if bare_cr is None:
            bare_cr = b"\r" in text.replace(b"\r\n", b"")
        if bare_cr:
            text = _LONE_CR.sub(b"", text)
    text = _strip_trailing_empty_lines(text)
    return b"" if text == b"\r\n" else text
