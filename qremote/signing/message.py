"""A message split into header fields and body, in its on-the-wire form (CRLF lines).

Signatures cover what the receiver sees, so the queue file's LF line ends are turned into
CRLF exactly as qmail-remote's body transfer does (an existing CRLF stays one line end).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class MalformedMessage(ValueError):
    """The header section cannot be read as header fields; the text says where."""


@dataclass(slots=True)
class Header:
    """One header field. Not frozen: a message has a handful of these and a frozen
    dataclass pays for its immutability on every construction; nothing changes them."""

    name: bytes
    """The field name as written (no colon, trailing blanks kept)."""
    raw: bytes
    """The whole field, folded lines included, with its final CRLF."""
    key: bytes = field(init=False, repr=False, compare=False)
    """The name as compared: lowercase, blanks before the colon removed."""

    def __post_init__(self) -> None:
        self.key = self.name.rstrip(b" \t").lower()

    @property
    def value(self) -> bytes:
        return self.raw[len(self.name) + 1 :]


@dataclass(frozen=True)
class Message:
    headers: list[Header]
    body: bytes
    """Everything after the empty line, CRLF line ends."""
    bare_cr: bool
    """The body holds a CR that is not part of a CRLF line end (DomainKeys ``nofws``
    drops those; knowing they are absent saves it a pass over the body)."""
    by_name: dict[bytes, list[Header]] = field(repr=False, compare=False)
    """Fields by lowercase name, each list in message order."""

    def get(self, name: bytes) -> list[Header]:
        """All fields of that name, in message order."""
        return self.by_name.get(name.lower(), [])


def to_wire(message: bytes) -> bytes:
    if b"\r" not in message:  # the usual queue file: LF only, one pass
        return message.replace(b"\n", b"\r\n")
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _has_bare_cr(message: bytes, body: bytes) -> bool:
    """In wire form every LF follows a CR, so a body with more CRs than LFs has a bare
    one; a message without any CR cannot."""
    return b"\r" in message and body.count(b"\r") != body.count(b"\n")


def parse(message: bytes) -> Message:
    """Split a queue-file message (LF or CRLF line ends) into header fields and body."""
    if not message:
        raise MalformedMessage("the message is empty")
    wire = to_wire(message)
    if wire.startswith(b"\r\n"):
        return Message([], wire[2:], _has_bare_cr(message, wire[2:]), {})
    end = wire.find(b"\r\n\r\n")
    if end < 0:
        head, body = wire, b""
    else:
        head, body = wire[: end + 2], wire[end + 4 :]
    headers: list[Header] = []
    current: list[bytes] = []
    for number, line in enumerate(
        head.split(b"\r\n")[:-1] if head.endswith(b"\r\n") else head.split(b"\r\n"), start=1
    ):
        if line[:1] in (b" ", b"\t"):
            if not current:
                raise MalformedMessage("the first header line starts with white space")
            current.append(line)
            continue
        if current:
            headers.append(_header(current))
        colon = line.find(b":")
        if colon <= 0 or not line[:colon].rstrip(b" \t"):
            shown = line[:40].decode("ascii", "replace")
            raise MalformedMessage(f"header line {number} is not a header field: {shown!r}")
        current = [line]
    if current:
        headers.append(_header(current))
    index: dict[bytes, list[Header]] = {}
    for h in headers:
        index.setdefault(h.key, []).append(h)
    return Message(headers, body, _has_bare_cr(message, body), index)


def _header(lines: list[bytes]) -> Header:
    raw = b"\r\n".join(lines) + b"\r\n"
    return Header(raw[: raw.index(b":")], raw)
