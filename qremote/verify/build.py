"""One incoming message verified into the message qmail-queue gets: our
Authentication-Results field, then the original with forged fields of ours renamed.

The in-process filter (``filter.py``) and the verifying daemon (``verifyd.py``) both call
:func:`build`, so the two paths give the same bytes by construction; what differs is only
where the settings and the DNS answers come from (read per message, or kept).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

from qremote.authres import authserv_id
from qremote.control import ControlDir, ControlError
from qremote.routing.addresses import parse_nameserver
from qremote.signing.choose import domain_of
from qremote.signing.message import parse as parse_message
from qremote.verify import arccheck, dkcheck, dkimcheck, dkimpolicy, results
from qremote.verify.dkimpolicy import Verdict
from qremote.verify.rewrite import with_header
from qremote.verify.txt import TxtLookup

FILES = ("authservid", "me", "nameservers", "dkimverifytimeout", "dkimverifypolicy", "dkimlength")
"""The control files verification reads; the daemon reloads when one of them changes."""


@dataclass(frozen=True)
class Settings:
    """What control/ says about verifying, read once (per message in-process, per change
    in the daemon)."""

    ours: str
    """The authserv-id: control/authservid, else control/me."""
    servers: list[tuple[str, int]]
    budget: int
    """dkimverifytimeout: seconds for DNS and work per message."""
    rules: dict[str, str]
    unsigned_tail: str

    @classmethod
    def load(cls, home: str) -> Settings:
        control = ControlDir(os.path.join(home, "control"))
        ours = authserv_id(control)
        servers = [parse_nameserver(line) for line in control.listing("nameservers")]
        budget = control.integer("dkimverifytimeout", 20)
        rules = dkimpolicy.parse(control.lines("dkimverifypolicy") or [])
        unsigned_tail = (control.line("dkimlength") or "pass").strip().lower()
        if unsigned_tail not in ("pass", "policy"):
            raise ControlError(f"control/dkimlength: {unsigned_tail!r} is not pass or policy")
        return cls(ours, servers, budget, rules, unsigned_tail)


def fingerprint(home: str) -> tuple[tuple[int, int, int] | None, ...]:
    """Identity of the control files verification reads (inode, size, mtime): equal
    fingerprints, same settings. Six stat calls, cheap enough for every message."""
    out: list[tuple[int, int, int] | None] = []
    for name in FILES:
        try:
            st = os.stat(os.path.join(home, "control", name))
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class Built(NamedTuple):
    out: int
    """The new message's descriptor (our field first)."""
    verdict: Verdict | None
    """What dkimverifypolicy says, when it refuses the message."""
    found: list[results.Result]
    """Each result the field states (verifyd counts them)."""


def build(
    settings: Settings, message_fd: int, size: int, lookup: TxtLookup, remote_ip: str | None = None
) -> Built:
    """Verify and write the new message; ``remote_ip`` is the SMTP client's address when
    known (ARC's ``smtp.remote-ip``)."""
    message = os.pread(message_fd, size, 0)
    tail = settings.unsigned_tail
    found = dkimcheck.verify(message, lookup, tail) + dkcheck.verify(message, lookup)
    found += arccheck.verify(message, lookup, remote_ip)
    try:
        from_fields = parse_message(message).get(b"from")
        from_domain = domain_of(from_fields[0].value) if from_fields else None
    except ValueError:
        from_domain = None
    del message
    verdict = dkimpolicy.verdict_for(settings.rules, from_domain, found)
    header = results.header(settings.ours, found)
    out = with_header(settings.ours, header, message_fd, size)
    return Built(out, verdict, results.shown(found))
