"""Incremental SMTP reply parsing, sans I/O.

Feed whatever bytes arrive; complete replies come out. The rules follow qmail's
smtpcode(): the code is the first three characters of the first line, a ``-`` as the
fourth character of a line means another line follows, CRs are dropped from the text and
at most 5000 bytes of text are kept. Unlike qmail, three characters that are not digits
give code 0 ("not a reply"), which the conversation treats as a temporary failure: a
server that sends garbage can never make us bounce mail.

Nothing here buffers a whole line, so a reply line of megabytes costs no memory; the
caller bounds how long one reply may take to arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qremote.report import HUGE_SMTP_TEXT


@dataclass(frozen=True)
class Reply:
    code: int
    """Three-digit reply code, or 0 when the peer did not send one."""
    text: bytes
    """All lines, LF-separated, CRs dropped, cut at 5000 bytes: what qmail logs."""
    lines: tuple[bytes, ...] = field(default=(), compare=False)
    """The first 1000 bytes of each line, CR stripped, for reading EHLO keywords."""

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600


_LINE_KEEP = 1000


class ReplyParser:
    """Turns a byte stream into :class:`Reply` objects."""

    def __init__(self) -> None:
        self._text = bytearray()
        self._line = bytearray()  # head of the current line (bounded)
        self._lines: list[bytes] = []
        self._code: int | None = None

    @property
    def partial(self) -> bool:
        """True when part of a reply has arrived but not its end."""
        return bool(self._text) or bool(self._line)

    def feed(self, data: bytes) -> list[Reply]:
        replies: list[Reply] = []
        start = 0
        n = len(data)
        while start < n:
            nl = data.find(b"\n", start)
            end = n if nl < 0 else nl + 1
            chunk = data[start:end]
            self._take(chunk)
            start = end
            if nl >= 0:
                reply = self._end_line()
                if reply is not None:
                    replies.append(reply)
        return replies

    def _take(self, chunk: bytes) -> None:
        chunk_nocr = chunk.replace(b"\r", b"")
        room = HUGE_SMTP_TEXT - len(self._text)
        if room > 0:
            self._text += chunk_nocr[:room]
        room = _LINE_KEEP + 1 - len(self._line)
        if room > 0:
            self._line += chunk_nocr[:room]

    def _end_line(self) -> Reply | None:
        line = bytes(self._line).rstrip(b"\n")
        self._line.clear()
        if self._code is None:
            head = line[:3]
            self._code = int(head) if len(head) == 3 and head.isdigit() else 0
        self._lines.append(line[:_LINE_KEEP])
        if line[3:4] == b"-":
            return None
        reply = Reply(self._code, bytes(self._text), tuple(self._lines))
        self._text.clear()
        self._lines = []
        self._code = None
        return reply
