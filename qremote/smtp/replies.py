"""Incremental SMTP reply parsing, sans I/O.

Feed whatever bytes arrive; complete replies come out. The rules follow qmail's
smtpcode(): the code is the first three characters of the first line, a ``-`` as the
fourth character of a line means another line follows, CRs are dropped from the text and
at most 5000 bytes of text are kept. Stricter than qmail, every line must be a reply line
as RFC 5321 section 4.2 writes it (three digits, then a space, a ``-`` or the line end,
and the same code on every line); a reply that is not gets code 0 ("not a reply"), which
the conversation treats as a temporary failure: a server that sends garbage can never
make us bounce mail, nor make a ``2500`` read as ``250``.

Nothing here buffers a whole line, so a reply line of megabytes costs no memory; a reply
longer than :data:`~qremote.limits.REPLY_MAX_BYTES` or
:data:`~qremote.limits.REPLY_MAX_LINES` raises :class:`ReplyTooLong`, and the caller
bounds how long one reply may take to arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qremote.limits import REPLY_LINE_KEEP, REPLY_MAX_BYTES, REPLY_MAX_LINES, REPLY_TEXT_KEEP


class ReplyTooLong(Exception):
    """The reply in progress passed a bound; the connection cannot be trusted further."""


@dataclass(frozen=True)
class Reply:
    code: int
    """Three-digit reply code, or 0 when the peer did not send a well-formed reply."""
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


def _line_code(line: bytes) -> int:
    """The code of one reply line, or 0 when the line is not ``3DIGIT [SP/- text]``."""
    head = line[:3]
    if len(head) == 3 and head.isdigit() and line[3:4] in (b"", b" ", b"-"):
        return int(head)
    return 0


class ReplyParser:
    """Turns a byte stream into :class:`Reply` objects."""

    def __init__(self) -> None:
        self._text = bytearray()
        self._line = bytearray()  # head of the current line (bounded)
        self._lines: list[bytes] = []
        self._code: int | None = None
        self._size = 0  # bytes of the reply in progress, all counted, CRs included

    @property
    def partial(self) -> bool:
        """True when part of a reply has arrived but not its end."""
        return bool(self._text) or bool(self._line)

    def feed(self, data: bytes) -> list[Reply]:
        """Complete replies in ``data`` (with what came before); :class:`ReplyTooLong`
        once the reply in progress passes a bound."""
        replies: list[Reply] = []
        start = 0
        n = len(data)
        while start < n:
            nl = data.find(b"\n", start)
            end = n if nl < 0 else nl + 1
            self._size += end - start
            if self._size > REPLY_MAX_BYTES:
                raise ReplyTooLong(f"a reply of more than {REPLY_MAX_BYTES} bytes")
            self._take(data[start:end])
            start = end
            if nl >= 0:
                reply = self._end_line()
                if reply is not None:
                    replies.append(reply)
        return replies

    def _take(self, chunk: bytes) -> None:
        chunk_nocr = chunk.replace(b"\r", b"")
        room = REPLY_TEXT_KEEP - len(self._text)
        if room > 0:
            self._text += chunk_nocr[:room]
        room = REPLY_LINE_KEEP + 1 - len(self._line)
        if room > 0:
            self._line += chunk_nocr[:room]

    def _end_line(self) -> Reply | None:
        line = bytes(self._line).rstrip(b"\n")
        self._line.clear()
        code = _line_code(line)
        if self._code is None:
            self._code = code
        elif code != self._code:
            self._code = 0  # a line of another code, or no code: not one reply
        self._lines.append(line[:REPLY_LINE_KEEP])
        if line[3:4] == b"-" and code:
            if len(self._lines) >= REPLY_MAX_LINES:
                raise ReplyTooLong(f"a reply of more than {REPLY_MAX_LINES} lines")
            return None
        reply = Reply(self._code, bytes(self._text), tuple(self._lines))
        self._text.clear()
        self._lines = []
        self._code = None
        self._size = 0
        return reply
