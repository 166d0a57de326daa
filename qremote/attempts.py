"""The rules for trying the addresses of one delivery, as decisions over plain data.

``delivery.py`` does the I/O: it asks tcpto, connects, holds SMTP sessions. What to do
after each of those is decided here, without sockets, so every rule of qmail's and of
ours is a unit test away (``tests/test_attempts.py``):

- :class:`Walk`: which addresses, in which order, and the report when none gave an answer.
  qmail's order (by preference, random among equals, as routing made it); an idle kept
  connection's address first (it is one qmail might have picked anyway); addresses of
  another family than the source address skipped. When every address refused us before
  the envelope (a failed greeting, a refused HELO, a broken server), the last one's words
  are the report: ``D`` only if every address gave a 5xx greeting, else ``Z``. When none
  could be reached: qmail's "no SMTP connection" text, with a note when no address was of
  the source address's family.
- :class:`HostAttempt`: one address, connection after connection. A kept connection that
  went stale, or died before anything of this message was sent, is replaced by a new
  one; a failed opportunistic TLS handshake is retried once in plain text on a new
  connection; a failed required one ends the delivery; unreachable or refusing moves on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

from qremote import report
from qremote.routing.mx import Target


class Event(Enum):
    """How one connection to an address ended."""

    UNREACHABLE = auto()
    """The connection could not be made (tcpto has it)."""
    REFUSED = auto()
    """Greeting, EHLO/HELO or the protocol failed before the envelope: try another."""
    STALE = auto()
    """A kept connection would not take RSET, or spoke while idle: nothing was sent."""
    DIED_IDLE = auto()
    """A kept connection died before anything of this message was sent."""
    TLS_FAILED = auto()
    """The TLS handshake failed after the server said 220 to STARTTLS."""
    OVER = auto()
    """The conversation gave its report (delivered, refused, or died mid-message)."""


class Next(Enum):
    """What to do after an :class:`Event`."""

    NEW_CONNECTION = auto()
    """The same address again, on a new connection, with the same TLS."""
    PLAIN = auto()
    """The same address again, on a new connection, without TLS."""
    NEXT_ADDRESS = auto()
    """Give up on this address."""
    REPORT = auto()
    """The delivery ends with this connection's report."""


@dataclass
class HostAttempt:
    """The rules for one address (see the module's docstring)."""

    tls_wanted: bool
    tls_required: bool

    def after(self, event: Event) -> Next:
        if event in (Event.UNREACHABLE, Event.REFUSED):
            return Next.NEXT_ADDRESS
        if event in (Event.STALE, Event.DIED_IDLE):
            return Next.NEW_CONNECTION
        if event is Event.TLS_FAILED:
            if self.tls_wanted and not self.tls_required:
                self.tls_wanted = False
                return Next.PLAIN
            return Next.REPORT
        return Next.REPORT


@dataclass(frozen=True)
class Refusal:
    """An address that refused us before the envelope, and what it said."""

    report: bytes
    permanent: bool
    """A 5xx greeting: the only refusal that may make a bounce."""


@dataclass
class Walk:
    """The addresses of one delivery (see the module's docstring)."""

    targets: list[Target]
    served: frozenset[str]
    """The addresses the source address can reach (of its family)."""
    kept_ip: str | None = None
    refusals: list[Refusal] = field(default_factory=list)

    def order(self) -> list[Target]:
        """The addresses to try, in order, those of another family left out."""
        first = [t for t in self.targets if t.ip == self.kept_ip][:1]
        rest = [t for t in self.targets if t not in first]
        return [t for t in first + rest if t.ip in self.served]

    def refused(self, refusal: Refusal) -> None:
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
