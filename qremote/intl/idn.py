"""Domains in their A-label form, for DNS and for matching control files (pure).

qmail-send hands qmail-remote the domain as the sender wrote it, so an IDN arrives as
UTF-8 (``例子.广告``, ``exämple.de``). DNS knows it only by its A-labels
(``xn--fsqu00a.xn--4rr70v``), and control files may name it either way; so every
lookup and every match is done on the A-label form (UTS #46 mapping, then IDNA2008, by
the ``idna`` library), while reports show the form qmail-send gave.
"""

from __future__ import annotations


class IdnError(ValueError):
    """Not a domain that can exist: the text says why."""


def ascii_domain(domain: str) -> str:
    """The A-label form of ``domain``, lowercased; an ASCII domain as it is (lowercased:
    underscores and address literals stay untouched). IdnError when it cannot be one."""
    if domain.isascii():
        return domain.lower()
    try:
        text = domain.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeDecodeError:
        raise IdnError("not UTF-8") from None
    import idna

    try:
        return idna.encode(text.rstrip("."), uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as e:
        raise IdnError(str(e) or "not a valid internationalized domain name") from None


def key(domain: str) -> str:
    """A control-file key or pattern in the form lookups use: the A-label form where it
    has one (``.``-prefixed suffixes and ``@``-prefixed domains keep their prefix), else
    as written (lowercased), so a bad line still matches only itself."""
    prefix = ""
    rest = domain
    for mark in ("@", "."):
        if rest.startswith(mark):
            prefix, rest = prefix + mark, rest[1:]
    local, at, host = rest.rpartition("@")
    try:
        converted = ascii_domain(host) if host else host
    except IdnError:
        return domain.lower()
    return prefix + (local.lower() + at if at else "") + converted


def ascii_address(address: bytes) -> bytes | None:
    """``local@domain`` with the domain in A-labels: what RFC 6531 section 3.2 lets a
    client send to a server without SMTPUTF8. None when the local part is not ASCII (no
    such downgrade exists); IdnError when the domain cannot be one."""
    local, at, domain = address.rpartition(b"@")
    if not at:
        return address if address.isascii() else None
    if not local.isascii():
        return None
    if domain.isascii():
        return address
    converted = ascii_domain(domain.decode("utf-8", "surrogateescape"))
    return local + b"@" + converted.encode("ascii")
