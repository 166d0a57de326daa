"""What a delivery ends with: the reports for qmail-rspawn, kept structured until they
are written (qmail-remote's output, qremoted's frame and log line), and the notes that
follow the server's words in the message report."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Outcome:
    """The reports of one delivery, each without its terminating NUL: one per recipient
    (``r``, ``h`` or ``s`` first), then the message report (``K``, ``Z`` or ``D`` first)."""

    recipients: list[bytes]
    message: bytes

    @classmethod
    def final(cls, text: bytes) -> Outcome:
        """A message report alone: the delivery ended before any recipient was asked."""
        return cls([], text)

    def wire(self) -> bytes:
        """What qmail-remote writes: every report followed by a NUL."""
        return b"".join(r + b"\0" for r in [*self.recipients, self.message])

    @property
    def letters(self) -> str:
        """Each recipient report's letter, in order (for the log line)."""
        return "".join(r[:1].decode("ascii", "replace") for r in self.recipients)


@dataclass
class Notes:
    """Extra lines for the qmail-send log, said after the server's words in a report:
    what was signed, TLS, fallbacks. One accumulator per delivery (and a copy per
    address tried, which adds what that address taught); every text comes from
    :mod:`qremote.report`."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def extend(self, lines: list[str]) -> None:
        self.lines.extend(lines)

    def copy(self) -> Notes:
        return Notes(list(self.lines))

    def after(self, text: bytes) -> bytes:
        """``text`` (a report) with the notes after it, each on a line of its own."""
        return with_notes(text, self.lines)


def with_notes(text: bytes, notes: list[str]) -> bytes:
    """Extra lines for the qmail-send log (TLS, fallbacks) after the server's text."""
    if not notes:
        return text
    if text and not text.endswith(b"\n"):
        text += b"\n"
    return text + "".join(n + "\n" for n in notes).encode()
