"""The bytes between the thin ``qremote-dkimverify`` and the verifying daemon, sans I/O.

Frames as ``qremote/framing.py`` makes them. The client spools the incoming message into
a memory file and sends one ``V`` frame (payload: the message's size in ASCII digits)
with that file attached (SCM_RIGHTS): the message is never copied through the socket,
and the client keeps its own descriptor, so whatever happens to the daemon it still has
the whole message. The daemon answers:

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


def reader() -> FrameReader:
    return FrameReader(KINDS)


__all__ = ["frame", "reader"]
