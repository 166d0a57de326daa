"""Tag=value lists (RFC 6376 section 3.2), as in DKIM-Signature, DomainKey-Signature and
key records: ``a=rsa-sha256; d=example.com; ...``. White space inside values is dropped,
which is right for every tag we read (base64, names, lists)."""

from __future__ import annotations

import re

_TAG = re.compile(rb"\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*([^;]*)")


def parse_tags(value: bytes) -> dict[bytes, bytes]:
    out = {}
    for part in value.split(b";"):
        m = _TAG.match(part)
        if m:
            out[m.group(1)] = re.sub(rb"\s+", b"", m.group(2))
    return out
