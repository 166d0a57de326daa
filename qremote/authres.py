"""Our Authentication-Results fields (RFC 8601): whose they are, and what they say.

Two parts of qremote meet here. The inbound filter writes one field of our authserv-id on
every message it queues and renames any other field that claims that id (a forger must
not be believed on our behalf); the outbound signer, sealing a forwarded message with ARC
(RFC 8617), copies that field's results and reads its ``arc=`` result. Both must agree on
what "ours" means, so the rule lives once, here.
"""

from __future__ import annotations

import re

from qremote.control import ControlDir

_TSPECIALS = b'()<>@,;:\\"/[]?='


def authserv_id(control: ControlDir) -> str:
    """Ours: control/authservid, else control/me (as qmail names itself)."""
    return (control.line("authservid") or control.line("me") or "localhost").strip()


def _skip_cfws(text: bytes, i: int) -> int:
    """Past white space and comments (nested, with quoted pairs: RFC 5322 CFWS)."""
    depth = 0
    while i < len(text):
        c = text[i : i + 1]
        if depth and c == b"\\":
            i += 2
            continue
        if c == b"(":
            depth += 1
        elif c == b")" and depth:
            depth -= 1
        elif not depth and c not in (b" ", b"\t", b"\r", b"\n"):
            return i
        i += 1
    return i


def authserv_id_of(value: bytes) -> bytes:
    """The authserv-id of an Authentication-Results value, lowercased: RFC 8601's
    ``[CFWS] value``, where a value is an RFC 2045 token or a quoted-string. A forger
    may write ours in either form, or behind comments; all of them must be found."""
    i = _skip_cfws(value, 0)
    if value[i : i + 1] == b'"':
        out = bytearray()
        i += 1
        while i < len(value):
            c = value[i : i + 1]
            if c == b"\\":
                out += value[i + 1 : i + 2]
                i += 2
                continue
            if c == b'"':
                break
            if c not in (b"\r", b"\n"):
                out += c
            i += 1
        return bytes(out).lower()
    start = i
    while i < len(value) and value[i] > 32 and value[i] != 127 and value[i] not in _TSPECIALS:
        i += 1
    return value[start:i].lower()


def without_comments(value: bytes) -> bytes:
    """The value with its comments (nested, quoted pairs inside) replaced by a space."""
    out = bytearray()
    depth = 0
    i = 0
    while i < len(value):
        c = value[i : i + 1]
        if depth and c == b"\\":
            i += 2
            continue
        if c == b"(":
            depth += 1
        elif c == b")" and depth:
            depth -= 1
            if not depth:
                out += b" "
        elif not depth:
            out += c
        i += 1
    return bytes(out)


_RESULT = re.compile(rb"^\s*([A-Za-z0-9-]+)\s*=\s*([A-Za-z]+)")


def results(value: bytes) -> list[tuple[str, str]]:
    """(method, result) of each resinfo in an Authentication-Results value, lowercased:
    ``dkim=pass header.d=...; arc=fail`` gives [("dkim", "pass"), ("arc", "fail")]."""
    parts = without_comments(value).split(b";")[1:]  # the first is the authserv-id
    out = []
    for part in parts:
        match = _RESULT.match(part)
        if match:
            out.append((match.group(1).decode().lower(), match.group(2).decode().lower()))
    return out
