"""Which domain signs: a pure decision over the message's addresses and the keys we hold.

DMARC passes when the DKIM ``d=`` aligns with the From: domain (relaxed alignment allows
a parent domain), so the From: domain and its parents come first, then the envelope
sender's domain and its parents, then the site-wide fallback key, which signs as the
From: domain (or, lacking one, the envelope sender's), as the old wrappers did.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from qremote.intl.idn import IdnError, ascii_domain
from qremote.signing.keys import SigningKey

_ADDR = re.compile(rb"<([^<>]*)>")
_NOT_IN_DOMAIN = re.compile(r"[ \t;()\[\]\\\"']")


def domain_of(address: bytes) -> str | None:
    """The domain of an address or a header value (``Name <a@b>`` or ``a@b``)."""
    text = address
    m = _ADDR.findall(address)
    if m:
        text = m[-1]
    text = text.split(b",")[0].strip()
    if b"@" not in text:
        return None
    domain = text.rsplit(b"@", 1)[1].strip(b" \t\r\n>").rstrip(b".")
    try:
        # An IDN signs as its A-label form (RFC 6376 section 3.5: d= is ASCII).
        decoded = ascii_domain(domain.decode("utf-8"))
    except (UnicodeDecodeError, IdnError):
        return None
    if not decoded or _NOT_IN_DOMAIN.search(decoded):
        return None
    return decoded


def parents(domain: str) -> list[str]:
    """``a.b.example.com`` -> itself, ``b.example.com``, ``example.com`` (not the TLD)."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(max(len(labels) - 1, 1))]


def choose(
    from_domain: str | None,
    sender_domain: str | None,
    keys_for: Callable[[str], list[SigningKey]],
    fallback: Callable[[], SigningKey | None],
) -> tuple[str, list[SigningKey]] | None:
    """(d= domain, keys) or None when no key applies."""
    for domain in (from_domain, sender_domain):
        if not domain:
            continue
        for candidate in parents(domain):
            keys = keys_for(candidate)
            if keys:
                return candidate, keys
    key = fallback()
    signer = from_domain or sender_domain
    if key is not None and signer:
        return signer, [key]
    return None
