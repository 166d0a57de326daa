"""The bytes between the thin ``qremote-dkimverify`` and the verifying daemon, sans I/O.

Frames as ``qremote/framing.py`` makes them. The client spools the incoming message into
a memory file and sends one ``V`` frame (payload: the message's size in ASCII digits,
then a space and the client's address when tcpserver gave one in ``TCPREMOTEIP``) with
that file attached (SCM_RIGHTS): the message is never copied through the socket, and the
client keeps its own descriptor, so whatever happens to the daemon it still has the
whole message. The daemon answers:

- ``A`` + seconds: taken; the answer comes within that many seconds (the message's time
  budget, dkimverifytimeout, and a margin);
- then one of ``Q`` (the new message, attached as a descriptor: queue it), ``U`` + log
  text (verification went wrong: queue the original unchanged), ``J`` + log text (the
  policy rejects: exit 31), ``F`` + log text (the policy defers: exit 71);
- or, instead of ``A``, ``N`` + reason: not taken (not allowed, busy, a bad request); the
  client verifies in-process (or passes the message on, as control/dkimverifyfallback
  says).

The daemon never runs qmail-queue: only the client does, once, whatever the daemon did;
so a daemon that dies, hangs or answers nonsense can cost time, never a message, and never
queue one twice. ``S`` asks for the daemon's state (``T`` + text, for ``qremote check``).
"""

import ipaddress

from qremote.framing import FrameReader, frame

SOCKET_DIR = "qremote-verifyd"
SOCKET_PATH = SOCKET_DIR + "/verifyd.sock"
"""Relative to the qmail home: a directory of its own, owned by the user verifyd runs
as (qmail-smtpd's, qmaild), apart from qremoted's qmailr-only ``qremote/``."""

VERIFY = b"V"
STATUS = b"S"
ACCEPTED = b"A"
QUEUE = b"Q"
UNCHANGED = b"U"
REJECT = b"J"
DEFER = b"F"
REFUSED = b"N"
TEXT = b"T"

KINDS = frozenset([VERIFY, STATUS, ACCEPTED, QUEUE, UNCHANGED, REJECT, DEFER, REFUSED, TEXT])

MARGIN = 5
"""Seconds the daemon adds to dkimverifytimeout in its promise: the work after the last
look-up, and a busy machine."""


def client_address(text: str | bytes | None) -> str | None:
    """The SMTP client's address as tcpserver's ``TCPREMOTEIP`` says it, for ARC's
    ``smtp.remote-ip``; None when absent or not an address (never a reason to refuse)."""
    if not text or len(text) > 45:
        return None
    try:
        raw = text.decode("ascii") if isinstance(text, bytes) else text
        return str(ipaddress.ip_address(raw))
    except (ValueError, UnicodeDecodeError):
        return None


def verify_payload(size: int, remote_ip: str | None) -> bytes:
    """A ``V`` frame's payload (the compiled filter writes the same bytes)."""
    return b"%d" % size + (b" " + remote_ip.encode() if remote_ip else b"")


def read_verify(payload: bytes) -> tuple[int, str | None] | None:
    """(size, client address or None) of a ``V`` payload; None when it names no size."""
    size, _, address = payload.partition(b" ")
    if not size.isdigit() or len(size) > 20:
        return None
    return int(size), client_address(address)


def reader() -> FrameReader:
    return FrameReader(KINDS)


__all__ = ["frame", "reader"]
