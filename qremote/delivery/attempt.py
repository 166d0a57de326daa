"""The rules for trying the addresses of one delivery, as decisions over plain data.

This is the one place a TLS or MX fallback rule lives. The connection loop
(:mod:`qremote.delivery.connections`) does the I/O: it asks tcpto, connects, holds SMTP
sessions, and tells an :class:`Attempt` what happened; the attempt answers with the next
command, the notes for the report and the TLS-report verdict. Every row below is a unit
test without sockets (``tests/test_delivery_attempt.py``).

:class:`Walk`: which addresses, in which order, and the report when none gave an answer.
qmail's order (by preference, random among equals, as routing made it); an idle kept
connection's address first (it is one qmail might have picked anyway); addresses of
another family than the source address skipped. When every address refused us before the
envelope (a failed greeting, a refused HELO, a broken server), the last one's words are
the report: ``D`` only if every address gave a 5xx greeting, else ``Z``. When none could
be reached: qmail's "no SMTP connection" text, with a note when no address was of the
source address's family.

:class:`Attempt`: one address, connection after connection.

=================================  ==========================================================
what happened                      what comes next
=================================  ==========================================================
a kept connection fits             reuse it (an opportunistic one kept in plain text is used
                                   as what it is: plain text)
a kept connection does not fit     end it (the TLS files changed), connect afresh
cannot connect                     the next address
kept connection stale, or died     a new connection to the same address, with the same TLS:
before anything was sent           nothing of this message was sent on it
died mid-message                   the delivery ends: ``Z`` (qmail's "connection died")
TLS failed, MTA-STS testing        report the failure; a new connection with TLS unverified
TLS failed, opportunistic          once more in plain text, on a new connection
TLS failed, DANE or STS enforce    the next address (another MX may be authenticated)
TLS failed, otherwise required     the delivery ends: ``Z``, never plain text
TLS cannot be set up (files)       required: the delivery ends, ``Z`` naming the file, no
                                   connection; otherwise plain text, with a note
refused before the envelope        the next address, with its words kept for the report
the conversation gave its report   the delivery ends with it; an open connection is kept
=================================  ==========================================================

TLS-report verdicts (RFC 8460) are given for new connections to hosts whose policy is
DANE or MTA-STS: success when TLS was authenticated (or DANE's records were all
unusable and TLS was had), the failure's result type when the handshake failed or
STARTTLS was not offered, ``dnssec-invalid`` when the TLSA lookup failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from qremote import report
from qremote.delivery.outcome import Notes
from qremote.routing.mx import Target
from qremote.smtp.conversation import Finished, NextHost, Stale
from qremote.tlsrpt.record import result_type


class Tls(Enum):
    """The TLS of the next connection."""

    PLANNED = "planned"
    """As the address's policy says (maybe none at all)."""
    UNVERIFIED = "unverified"
    """TLS without checking the certificate (MTA-STS testing, after a failure)."""
    NONE = "none"
    """Plain text."""


@dataclass(frozen=True)
class TlsFacts:
    """What the address's TLS policy and setup say, as plain data."""

    planned: bool = False
    """TLS is to be tried (STARTTLS, or implicit TLS)."""
    required: bool = False
    verifying: bool = False
    """The planned TLS checks the certificate (a CA file or the system's CAs)."""
    dane: bool = False
    """DANE holds this host (TLSA records, maybe all unusable)."""
    authenticated: bool = False
    """The policy asks for authentication (a CA, the system's CAs, or TLSA records)."""
    sts: str | None = None
    """The MTA-STS mode that decided the policy (``enforce``/``testing``), if any."""
    sts_id: str | None = None
    """That MTA-STS policy's id (for the note)."""
    unavailable: str | None = None
    """Why the policy's TLS could not be set up (a CA file, clientcert.pem or
    tlsclientciphers that cannot be used), if it could not."""


class Kept(Enum):
    """How an idle connection taken from the pool fits this address's TLS."""

    NONE = "none"
    FITS = "fits"
    """Kept with the very TLS a new connection would have."""
    FITS_PLAIN = "fits-plain"
    """Kept in plain text, and this address's TLS is opportunistic."""
    STALE_SETUP = "stale-setup"
    """Kept with another TLS set-up (the files changed since): not to be used."""


# -- commands --------------------------------------------------------------------------


@dataclass(frozen=True)
class Connect:
    """A new connection to the address, with this TLS."""

    tls: Tls
    drop_kept: bool = False
    """End the kept connection first: it does not fit."""


@dataclass(frozen=True)
class Reuse:
    """Send on the kept connection."""


@dataclass(frozen=True)
class NextAddress:
    """Give up on this address; ``refusal`` (None: it could not be reached) is what it
    said, kept for the report in case no other address does better."""

    refusal: NextHost | None = None


@dataclass(frozen=True)
class Finish:
    """The delivery ends with this message report."""

    text: bytes
    recipients: bool = True
    """The recipient reports so far go with it."""
    keep: bool = False
    """Hand the open connection to the pool (else it is closed)."""


Command = Connect | Reuse | NextAddress | Finish


@dataclass(frozen=True)
class Answer:
    command: Command
    verdict: str | None = None
    """For the TLS report: ``"success"``, a failure's RFC 8460 result type, or None."""


SUCCESS = "success"


@dataclass(frozen=True)
class Conversed:
    """What a connection's conversation ended with (from the session, as plain data)."""

    final: Finished | NextHost | Stale
    tls_info: str = ""
    """``TLS 1.3 ..., verified ...`` when TLS was negotiated."""
    auth_info: str = ""
    raw_headers: bool = False
    """Header fields not ASCII were sent to a server without SMTPUTF8."""
    eight_bit_unasked: bool = False


@dataclass
class Attempt:
    """The rules for one address (see the module's docstring)."""

    ip: str
    tls: TlsFacts
    notes: Notes
    """The delivery's notes and what this address adds."""
    kept: Kept = Kept.NONE
    carried: int = 0
    """Messages the kept connection has carried before this one."""
    now: Tls = field(init=False, default=Tls.PLANNED)
    """The TLS of the current connection."""
    on_kept: bool = field(init=False, default=False)
    """The current connection is the kept one."""

    @classmethod
    def unusable(cls, why: bytes, notes: Notes) -> Answer:
        """DANE holds the host and its TLSA lookup failed: not tried, never without TLS."""
        return Answer(NextAddress(NextHost(notes.after(why), False)), "dnssec-invalid")

    def start(self) -> Answer:
        if self.tls.unavailable is not None:
            if self.tls.required:
                # Required TLS that cannot be set up: the administrator's to fix (Z),
                # never plain text; no connection is made.
                return Answer(Finish(report.control_error(self.tls.unavailable), False))
            self.notes.add(report.note_tls_not_tried(self.tls.unavailable))
        if self.tls.sts is not None and self.tls.sts_id is not None:
            self.notes.add(report.note_sts(self.tls.sts, self.tls.sts_id))
        if not self.tls.planned:
            self.now = Tls.NONE
        if self.kept is Kept.FITS_PLAIN and self.tls.planned and not self.tls.required:
            self.now = Tls.NONE  # a kept plain-text connection: used as what it is
            return self._reuse()
        if self.kept is Kept.FITS:
            return self._reuse()
        return Answer(Connect(self.now, drop_kept=self.kept is not Kept.NONE))

    def _reuse(self) -> Answer:
        self.on_kept = True
        return Answer(Reuse())

    def _afresh(self) -> Answer:
        self.on_kept = False
        return Answer(Connect(self.now))

    @property
    def _fresh_tls(self) -> bool:
        """The current connection is new and tried TLS."""
        return not self.on_kept and self.now is not Tls.NONE

    def unreachable(self) -> Answer:
        return Answer(NextAddress())

    def stale(self) -> Answer:
        """The kept connection would not take RSET: nothing of this message was sent."""
        if self.on_kept:
            return self._afresh()
        return Answer(NextAddress())

    def dropped(self, idle: bool, text: bytes) -> Answer:
        """The connection died; ``idle``: before anything of this message was sent."""
        if self.on_kept and idle:
            return self._afresh()
        return Answer(Finish(self.notes.after(text)))

    def tls_failed(self, why: str) -> Answer:
        """The handshake failed after the server said 220 to STARTTLS."""
        verdict = None
        if not self.on_kept and self.tls.authenticated:
            verdict = result_type(why)
        if self.tls.sts == "testing" and self._verifying:
            # MTA-STS testing: the failure is reported; the mail goes with TLS as before.
            self.notes.add(report.note_sts_testing_failed(why))
            self.now = Tls.UNVERIFIED
            return Answer(Connect(self.now), verdict)
        if self.now is not Tls.NONE and not self.tls.required:
            self.notes.add(report.note_tls_retried(self.ip, why))
            self.now = Tls.NONE
            return Answer(Connect(self.now), verdict)
        failed = report.tls_failed(self.ip, why)
        if self.now is Tls.PLANNED and (self.tls.dane or self.tls.sts == "enforce"):
            # This host cannot be authenticated; another MX of the domain may be.
            return Answer(NextAddress(NextHost(self.notes.after(failed), False)), verdict)
        return Answer(Finish(failed, recipients=False), verdict)

    @property
    def _verifying(self) -> bool:
        return self.now is Tls.PLANNED and self.tls.verifying

    def conversed(self, said: Conversed) -> Answer:
        """The conversation on the current connection came to its end."""
        final = said.final
        if isinstance(final, Stale):
            return self.stale()
        verdict = None
        if said.tls_info:
            self.notes.add(said.tls_info)
            if self._fresh_tls and (self._verifying or (self.now is Tls.PLANNED and self.tls.dane)):
                verdict = SUCCESS  # (DANE with TLSA records all unusable: TLS was what they asked)
        elif self._fresh_tls and not isinstance(final, NextHost):
            verdict = "starttls-not-supported"
        if said.auth_info:
            self.notes.add(said.auth_info)
        if said.raw_headers:
            self.notes.add(report.NOTE_RAW_HEADERS)
        if said.eight_bit_unasked:
            self.notes.add(report.NOTE_8BIT)
        if self.on_kept:
            self.notes.add(report.note_reused(self.ip, self.carried + 1))
        if isinstance(final, Finished):
            return Answer(Finish(self.notes.after(final.report), keep=final.open), verdict)
        return Answer(
            NextAddress(NextHost(self.notes.after(final.report), final.permanent)), verdict
        )


@dataclass
class Walk:
    """The addresses of one delivery (see the module's docstring)."""

    targets: list[Target]
    served: frozenset[str]
    """The addresses the source address can reach (of its family)."""
    kept_ip: str | None = None
    refusals: list[NextHost] = field(default_factory=list)

    def order(self) -> list[Target]:
        """The addresses to try, in order, those of another family left out."""
        first = [t for t in self.targets if t.ip == self.kept_ip][:1]
        rest = [t for t in self.targets if t not in first]
        return [t for t in first + rest if t.ip in self.served]

    def refused(self, refusal: NextHost) -> None:
        self.refusals.append(refusal)

    def final(self, family_note: str) -> tuple[bytes, list[str]]:
        """The report when no address gave an answer, and the notes to add to it;
        ``family_note`` is said when no address was of the source address's family."""
        if not self.refusals:
            if not self.served.intersection(t.ip for t in self.targets):
                return report.NOCONN, [family_note]
            return report.NOCONN, []
        last = self.refusals[-1].report
        every_one = len(self.refusals) == len(self.targets)
        if every_one and all(r.permanent for r in self.refusals):
            return last, []
        return b"Z" + last[1:], []
