"""DKIM-Signature creation (RFC 6376) with RSA-SHA256 and Ed25519-SHA256 (RFC 8463)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from qremote.signing import canon, signatures
from qremote.signing.keys import SigningKey
from qremote.signing.message import Header, Message

DEFAULT_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "in-reply-to", "references", "mime-version", "content-type",
    "content-transfer-encoding", "content-disposition", "content-id",
    "list-id", "list-help", "list-unsubscribe", "list-unsubscribe-post", "list-subscribe",
    "list-post", "list-owner", "list-archive", "resent-date", "resent-from", "resent-to",
    "resent-cc", "resent-message-id",
)  # fmt: skip
"""Fields signed when present."""

OVERSIGNED = ("from", "subject", "date", "to")
"""Listed once more than they occur, so a copy added in transit breaks the signature."""

FOLD_AT = 72


@dataclass(frozen=True)
class Options:
    header_canon: str = "relaxed"
    body_canon: str = "relaxed"
    expire_after: int = 0
    """Seconds until ``x=``; 0 leaves ``x=`` out."""


_LISTED = [(name.encode(), name in OVERSIGNED) for name in DEFAULT_HEADERS]
"""(name, over-signed) for each default field: built once, not per message."""


def header_list(message: Message) -> list[bytes]:
    """The ``h=`` names, lowercase, each as often as it is signed."""
    present = message.by_name
    names: list[bytes] = []
    for name, over in _LISTED:
        fields = present.get(name)
        if fields:
            names += [name] * (len(fields) + over)
        elif over:
            names.append(name)
    return names


def selected(message: Message, names: list[bytes]) -> list[Header]:
    """RFC 6376 5.4.2: for each listed name, the last instance not yet used."""
    present = message.by_name
    used: dict[bytes, int] = {}
    out = []
    for name in names:
        fields = present.get(name)
        if fields:
            n = used.get(name, 0) + 1
            if n <= len(fields):
                out.append(fields[-n])
                used[name] = n
    return out


def fold_tags(prefix: bytes, tags: list[bytes]) -> bytes:
    """``prefix`` then the ``tag=value`` items joined with ``; ``, folding before FOLD_AT
    columns (never before the first item: it stays on the prefix's line)."""
    pieces = [prefix]
    column = len(prefix)
    last = len(tags) - 1
    for i, tag in enumerate(tags):
        piece = tag + b";" if i < last else tag
        if i and column + 1 + len(piece) > FOLD_AT:
            pieces.append(b"\r\n\t")
            column = 1
        else:
            pieces.append(b" ")
            column += 1
        pieces.append(piece)
        column += len(piece)
    return b"".join(pieces)


def fold_value(value: bytes, first: int) -> bytes:
    """Break a long base64 value into folded pieces (white space inside b= is ignored)."""
    pieces = [value[:first]]
    pieces += [value[i : i + FOLD_AT - 1] for i in range(first, len(value), FOLD_AT - 1)]
    return b"\r\n\t".join(p for p in pieces if p)


def body_hash(message: Message, body_canon: str) -> bytes:
    return base64.b64encode(hashlib.sha256(canon.DKIM_BODY[body_canon](message.body)).digest())


def sign(
    message: Message,
    domain: str,
    key: SigningKey,
    now: int,
    options: Options,
    bh: bytes | None = None,
) -> bytes:
    """The complete ``DKIM-Signature:`` field, folded, ending in CRLF."""
    names = header_list(message)
    if bh is None:
        bh = body_hash(message, options.body_canon)
    tags = [
        b"v=1",
        b"a=" + key.algorithm.encode(),
        f"c={options.header_canon}/{options.body_canon}".encode(),
        b"d=" + domain.encode(),
        b"s=" + key.selector.encode(),
        b"t=%d" % now,
    ]
    if options.expire_after:
        tags.append(b"x=%d" % (now + options.expire_after))
    tags += [b"h=" + b":".join(names), b"bh=" + bh, b"b="]
    header_canon = canon.DKIM_HEADER[options.header_canon]
    covered = b"".join(header_canon(h) for h in selected(message, names))
    return signed_field(b"DKIM-Signature", tags, covered, key, options.header_canon)


def signed_field(
    name: bytes, tags: list[bytes], covered: bytes, key: SigningKey, header_canon: str
) -> bytes:
    """The field ``name`` with ``tags`` (the last one ``b=``) and its signature, folded,
    ending in CRLF: the signed data is ``covered`` (the fields it signs, canonicalized)
    and then this field itself with ``b=`` empty and no final CRLF (RFC 6376 3.7; ARC's
    fields are signed the same way, RFC 8617 5.1)."""
    unsigned = fold_tags(name + b":", tags)
    canonical = canon.DKIM_HEADER[header_canon](Header(name, unsigned + b"\r\n"))
    b64 = base64.b64encode(signatures.sign(key, covered + canonical[:-2]))
    last_line = len(unsigned) - unsigned.rfind(b"\n") - 1
    return unsigned + fold_value(b64, max(FOLD_AT - last_line, 8)) + b"\r\n"
