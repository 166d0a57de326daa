"""Where a domain wants its TLS reports: the ``rua`` of ``_smtp._tls.<domain>``, read
strictly (RFC 8460 section 3). Pure functions.

The receiving domain writes this record, so everything in it is hostile: it chooses whom
our daily job mails (signed by us) and which URLs it POSTs to. What is kept:

- ``mailto:`` with exactly one address and nothing else (RFC 6068's ``?`` header fields
  are refused: they would put header fields into our mail). The address, percent-decoded,
  must be a plain ``local@domain``: a dot-atom local part of RFC 5322's atext (not
  starting with ``-``, so it can never read as an option) and a host name of letters,
  digits, hyphens and dots. Nothing else reaches a header field or a command line.
- ``https:`` URLs that ``urllib.parse`` reads without error, with a host name (no user
  information, no IP literal), a port from 1 to 65535 if one is given, and no characters
  outside RFC 3986's.
- At most :data:`~qremote.limits.TLSRPT_MAX_RUA` of them, duplicates dropped.

Everything else is skipped, and each skip is said in a line naming the domain (the URI
itself only escaped and cut short, so it cannot forge a log line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urlsplit

from qremote.limits import TLSRPT_MAX_RUA, TLSRPT_RUA_MAX_BYTES

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"(?!-){_ATEXT}(\.{_ATEXT})*")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(\.{_LABEL})+\.?")
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
"""RFC 3986's unreserved, reserved and percent: nothing else may stand in a URI."""


@dataclass(frozen=True)
class Target:
    """One place a report goes."""

    kind: str
    """``mailto`` or ``https``."""
    where: str
    """The address (mailto) or the URL (https)."""

    def __str__(self) -> str:
        return f"mailto:{self.where}" if self.kind == "mailto" else self.where


@dataclass
class Rua:
    targets: list[Target] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Why each URI that is not used was skipped, one line each."""


def shown(text: str, limit: int = 80) -> str:
    """A value from the network as it may appear in a log line: escaped, cut short."""
    cut = text[:limit]
    return ascii(cut)[1:-1] + ("..." if len(text) > limit else "")


def host_name(text: str) -> bool:
    """A DNS host name of at least two labels, in letters, digits, hyphens and dots,
    whose last label is not all digits (so never an IPv4 address)."""
    if len(text) > 253 or _HOST.fullmatch(text) is None:
        return False
    return not text.rstrip(".").rpartition(".")[2].isdigit()


def find_record(records: list[bytes]) -> bytes | None:
    """Exactly one TXT string starting ``v=TLSRPTv1`` (RFC 8460 section 3), or None."""
    ours = [r for r in records if r.startswith(b"v=TLSRPTv1;") or r == b"v=TLSRPTv1"]
    return ours[0] if len(ours) == 1 else None


def parse_rua(records: list[bytes]) -> Rua:
    """The report targets of ``_smtp._tls.<domain>`` and the reasons for each skip."""
    record = find_record(records)
    found = Rua()
    if record is None:
        return found
    text = record.decode("ascii", "replace")
    value = None
    for part in text.split(";"):
        name, sep, rest = part.partition("=")
        if sep and name.strip(" \t") == "rua" and value is None:
            value = rest
    if value is None:
        return found
    for raw in value.split(","):
        uri = raw.strip(" \t")
        target, why = _target(uri)
        if target is None:
            found.skipped.append(f"rua {shown(uri)} skipped: {why}")
        elif target in found.targets:
            continue
        elif len(found.targets) >= TLSRPT_MAX_RUA:
            found.skipped.append(
                f"rua {shown(uri)} skipped: only the first {TLSRPT_MAX_RUA} are used"
            )
        else:
            found.targets.append(target)
    return found


def _target(uri: str) -> tuple[Target | None, str]:
    if len(uri) > TLSRPT_RUA_MAX_BYTES:
        return None, f"longer than {TLSRPT_RUA_MAX_BYTES} bytes"
    if not uri:
        return None, "empty"
    if not _URI_CHARS.fullmatch(uri):
        return None, "characters a URI may not hold"
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return None, "not a URI"
    scheme = scheme.lower()
    if scheme == "mailto":
        address, why = mail_address(rest)
        return (Target("mailto", address), "") if address is not None else (None, why)
    if scheme == "https":
        return _https(uri)
    return None, "neither mailto: nor https:"


def mail_address(text: str) -> tuple[str | None, str]:
    """The one address of a ``mailto:`` URI's body, or None and why."""
    if "?" in text:
        return None, "mailto: with header fields (?...)"
    try:
        address = unquote_to_bytes(text).decode("ascii")
    except UnicodeDecodeError:
        return None, "an address that is not ASCII"
    local, at, host = address.rpartition("@")
    if not at or not _LOCAL.fullmatch(local) or not host_name(host):
        return None, "not one plain address (local@host.name)"
    if len(address) > 254:
        return None, "an address longer than 254 bytes"
    return address, ""


def _https(uri: str) -> tuple[Target | None, str]:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as e:
        return None, f"not a valid URL ({e})"
    host = parts.hostname or ""
    if parts.username is not None or parts.password is not None:
        return None, "a URL with user information"
    if not host_name(host):
        return None, "a URL without a host name"
    if port is not None and not 1 <= port <= 65535:
        return None, "a port out of range"
    if parts.fragment:
        return None, "a URL with a fragment"
    return Target("https", uri), ""
