"""Recording sessions for TLS reports: one line per session held to a policy.

Every delivery process (standalone qmail-remote or qremoted) appends one JSON line per
session to ``$QMAILHOME/qremote/tlsrpt/<UTC day>.log``: one ``write`` with O_APPEND, shorter
than PIPE_BUF, so lines from many processes never interleave. The daily job
(:mod:`qremote.tlsrpt.send`) sums them per policy domain. Recording never fails a
delivery: a folder that cannot be written loses the line (``qremote check`` warns).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

MAX_LINE = 4000
"""Below PIPE_BUF (4096 on Linux): an O_APPEND write of this much is never interleaved."""


@dataclass(frozen=True)
class Held:
    """The policy a session was held to, as RFC 8460's ``policy`` object names it."""

    kind: str
    """``sts`` or ``tlsa``."""
    domain: str
    """The policy domain: the recipient domain."""
    strings: tuple[str, ...] = ()
    """The policy's lines (MTA-STS) or the TLSA records (DANE)."""
    mx: tuple[str, ...] = ()
    """MTA-STS ``mx`` patterns."""


def folder(home: str) -> str:
    return os.path.join(home, "qremote", "tlsrpt")


def day_of(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def record(
    home: str,
    held: Held,
    result: str | None,
    sending_ip: str = "",
    mx_host: str = "",
    mx_ip: str = "",
    now: float | None = None,
) -> None:
    """One session: ``result`` None for a success, else its RFC 8460 result type."""
    moment = time.time() if now is None else now
    entry = {
        "type": held.kind,
        "domain": held.domain,
        "policy": list(held.strings),
        "mx": list(held.mx),
        "result": result or "",
        "sending-ip": sending_ip,
        "mx-host": mx_host,
        "mx-ip": mx_ip,
    }
    line = json.dumps(entry, separators=(",", ":")) + "\n"
    if len(line.encode()) > MAX_LINE:  # a policy that long: keep the count, not the text
        entry["policy"] = []
        line = json.dumps(entry, separators=(",", ":")) + "\n"
    path = os.path.join(folder(home), day_of(moment) + ".log")
    try:
        os.makedirs(folder(home), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode()[:MAX_LINE])
        finally:
            os.close(fd)
    except OSError:
        pass


def result_type(reason: str) -> str:
    """RFC 8460 section 4.3's result type for one of our TLS failure texts."""
    text = reason.lower()
    if "starttls" in text and ("not" in text or "refused" in text):
        return "starttls-not-supported"
    if "expired" in text:
        return "certificate-expired"
    if "mismatch" in text:
        return "certificate-host-mismatch"
    if "self-signed" in text or "issuer" in text or "not trusted" in text:
        return "certificate-not-trusted"
    return "validation-failure"
