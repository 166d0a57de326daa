"""The bytes between the thin ``qmail-remote`` and qremoted, without any I/O.

Every message is a frame: one kind byte, a 4-byte big-endian length, the payload. The
client sends one request frame; for a delivery its stdin descriptor rides along as
SCM_RIGHTS on the first byte, so the queue file is never copied. The daemon answers:

- ``N`` + reason: not taken (busy, shutting down, not allowed); the client delivers itself;
- ``A`` + interval: accepted; from here on the message may be sent, so a broken socket
  means ``Z``. The interval (seconds, ASCII) promises a ``W`` at least that often until
  the report; an ``A`` without one (an older qremoted) promises nothing;
- ``W``: still working on it (the heartbeat), so a silent daemon is a stuck one;
- ``R`` + report bytes, exactly what qmail-remote writes to qmail-rspawn;
- ``T`` + text, the answer to a status request.

A client that asks with ``E`` instead of ``D`` (same payload) takes part in the *commit*:
just before the final dot the daemon sends ``C`` + seconds, and sends the dot only after
the client answered ``Y``. Until it said ``Y`` the client may give up at any moment, by
closing the socket, and the message is then never sent by the daemon (the delivery is
abandoned without the dot); once it said ``Y`` it waits for the report (at most the
seconds ``C`` named). So no client ever reports a delivery the daemon goes on to make:
a busy daemon can delay mail, never duplicate it.

Standard library only, nothing heavy: the thin client loads this on every delivery.
"""

from qremote.framing import HEADER, MAX_PAYLOAD, WireError, frame
from qremote.framing import FrameReader as _FrameReader

__all__ = ["HEADER", "MAX_PAYLOAD", "FrameReader", "WireError", "frame"]

SOCKET_NAME = "qremoted.sock"
RELATIVE_PATH = "qremote/" + SOCKET_NAME
"""Where qremoted listens, relative to the qmail home (qmail-remote's working directory):
a Unix socket path may not exceed 107 bytes, a qmail home may be long."""

FALLBACKS_PATH = "qremote/fallbacks"
"""One byte is appended here (relative to the qmail home) by every delivery the thin
client runs in-process because qremoted did not take it: its size is the count
qremoted's ``/metrics`` shows (``qremote_client_fallbacks_total``)."""
FALLBACKS_MAX = 1_000_000
"""Bytes the file may reach; past it the fallbacks are no longer counted (delete it to
count again), so a qremote left without its daemon cannot fill the disk."""

DELIVER = b"D"
"""Request: argv[1:] (host, sender, recipients) joined by NUL; stdin passed alongside."""
DELIVER_COMMITTED = b"E"
"""The same request from a client that answers ``C`` (every client since the commit)."""
COMMIT = b"C"
"""Daemon to client, before the final dot: still waiting? Payload: the seconds the client
must then wait for the report at most."""
YES = b"Y"
"""Client to daemon: yes, send the dot; I wait for the report."""
ALIVE_PATH = "qremote/qremoted.alive"
"""A file qremoted holds an exclusive flock on for its whole life: a client that has
waited long finds out with LOCK_SH|LOCK_NB whether the daemon is there at all (it is
when the lock is refused) before it gives up on it."""
STATUS = b"S"
"""Request: in-flight deliveries and cached connections, as text."""
REFUSED = b"N"
ACCEPTED = b"A"
WORKING = b"W"
REPORT = b"R"
TEXT = b"T"

KINDS = frozenset(
    [DELIVER, DELIVER_COMMITTED, STATUS, REFUSED, ACCEPTED, WORKING, REPORT, TEXT, COMMIT, YES]
)


class FrameReader(_FrameReader):
    """Frames of this protocol (its kinds) from bytes as they arrive."""

    def __init__(self) -> None:
        super().__init__(KINDS)


def deliver_request(args: list[bytes]) -> bytes:
    """The request for ``qmail-remote host sender recip...`` (args without argv[0])."""
    return frame(DELIVER, b"\0".join(args))


def split_args(payload: bytes) -> list[bytes]:
    return payload.split(b"\0")
