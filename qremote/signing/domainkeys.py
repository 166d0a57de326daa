"""DomainKey-Signature creation (RFC 4870): rsa-sha1, ``nofws`` or ``simple``.

Two details decide whether verifiers agree: ``d=`` is the domain of the Sender: field if
there is one, else of From:; and with ``h=`` verifiers hash the listed fields in ``h=``
order, every occurrence of a name together in message order, so we sign the same way.
"""

from __future__ import annotations

import base64

from qremote.signing import canon, signatures
from qremote.signing.dkim import DEFAULT_HEADERS, FOLD_AT, fold_tags, fold_value
from qremote.signing.keys import SigningKey
from qremote.signing.message import Message

_KEYS = [name.encode() for name in DEFAULT_HEADERS]


def header_list(message: Message) -> list[bytes]:
    """The ``h=`` names present in the message, lowercase, each once."""
    present = message.by_name
    return [name for name in _KEYS if name in present]


def sign(message: Message, domain: str, key: SigningKey, canonicalization: str = "nofws") -> bytes:
    """The complete ``DomainKey-Signature:`` field, folded, ending in CRLF."""
    if not key.is_rsa:
        raise ValueError(f"DomainKeys needs an RSA key, {key.path} is not one")
    names = header_list(message)
    present = message.by_name
    data = b"".join(canon.dk_header(h, canonicalization) for name in names for h in present[name])
    data += canon.dk_body(message.body, canonicalization, message.bare_cr)
    signature = base64.b64encode(signatures.sign(key, data, "sha1"))
    tags = [
        b"a=rsa-sha1",
        b"c=" + canonicalization.encode(),
        b"d=" + domain.encode(),
        b"s=" + key.selector.encode(),
        b"q=dns",
        b"h=" + b":".join(names),
        b"b=",
    ]
    unsigned = fold_tags(b"DomainKey-Signature:", tags)
    last_line = len(unsigned) - unsigned.rfind(b"\n") - 1
    return unsigned + fold_value(signature, max(FOLD_AT - last_line, 8)) + b"\r\n"
