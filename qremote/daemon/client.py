"""The thin ``qmail-remote``'s half of the conversation with qremoted.

It runs once per delivery, so it imports next to nothing: ``posix`` instead of ``os``,
``_socket`` instead of ``socket`` (which pulls in enum and selectors), no dataclasses.
:func:`deliver` returns the report bytes, or None when the daemon did not take the
delivery, in which case the caller delivers in-process: nothing was sent yet.
"""

import _socket
import posix
import sys

from qremote.daemon import wire

SOCKET_NAME = wire.SOCKET_NAME

LOST = (
    b"Zqremoted stopped answering during the delivery; the message may or may not have "
    b"been sent, qmail will try again. (#4.3.0)\n\0"
)
"""After ``Y`` (or ``A`` from a daemon without the commit) the message may be on its way:
only a retry is safe."""

NOT_SENT = (
    b"Zqremoted did not finish the delivery in time; the message was not sent, qmail will "
    b"try again. (#4.3.0)\n\0"
)
"""Given up on before ``Y``: the daemon never sends the dot without it."""

ACCEPT_TIMEOUT = 10.0
"""Seconds qremoted has to say ``A`` before we look whether it is running at all; it
says it as soon as it has read the request, unless it is at its limit of clients."""

STALL_BEATS = 3
"""After ``A``, when this many of the daemon's promised heartbeat intervals pass without
a word, we look whether it is running at all."""

PATIENCE = 300.0
"""Seconds of silence we bear from a daemon that is running (busy beyond its heartbeats,
at its limit of clients, or wedged) before ``A``; after ``A`` the daemon names its own
(``qremote daemon --patience``). qmail-remote must never hang for good; before ``Y``
giving up sends nothing twice, it only defers."""

STATUS_PATIENCE = 30.0
"""Seconds ``qremote status`` (and check) bears a running daemon's silence."""

RECONNECTS = 3
"""Times a request is sent again when the daemon dropped it before ``Y`` while it still
runs (a worker that died): nothing of the message was sent on the dropped one."""


def _seconds(text: bytes) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value < 86400 else None


def stall_timeout(accepted_payload: bytes) -> float | None:
    """Seconds of silence to allow after ``A`` + interval before we look whether the
    daemon still runs; None (wait for ever, as for an older qremoted that sends no
    heartbeat) when the payload names no usable interval."""
    interval = _seconds(accepted_payload.split(b" ")[0])
    return None if interval is None else interval * STALL_BEATS


def patience(accepted_payload: bytes) -> float:
    """The silence to bear from a running daemon, as ``A`` + "interval patience" names it."""
    words = accepted_payload.split(b" ")
    given = _seconds(words[1]) if len(words) > 1 else None
    return PATIENCE if given is None else given


def commit_timeout(payload: bytes) -> float:
    """Seconds to wait for the report after ``Y``: what ``C`` named, within reason."""
    given = _seconds(payload)
    return PATIENCE if given is None else given


def daemon_alive() -> bool:
    """Is qremoted running for the qmail home we are in? It holds an exclusive flock on
    its alive file for its whole life; our shared one is refused while it does."""
    import fcntl

    try:
        fd = posix.open(wire.ALIVE_PATH, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        posix.close(fd)  # closing drops our lock, if we got it
    return False


RELATIVE_PATH = wire.RELATIVE_PATH


def _connect(home: str):
    """A connection to qremoted, or None. Changes into ``home``, as qmail-remote does."""
    try:
        posix.chdir(home)
    except OSError:
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(RELATIVE_PATH)
    except OSError:
        sock.close()
        return None
    return sock


def _connect_elsewhere(home: str):
    """:func:`_connect` for a process that must keep its working directory."""
    here = posix.open(".", posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        return _connect(home)
    finally:
        posix.fchdir(here)
        posix.close(here)


def _send_request(sock, request: bytes, fd: int | None) -> None:
    """Send the request, with ``fd`` attached to its first byte when given."""
    sent = 0
    if fd is not None:
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))]
        sent = sock.sendmsg([request], rights)
    if sent < len(request):
        sock.sendall(request[sent:])


def _give_up(sock) -> bytes:
    """Stop waiting for ``A``, atomically: once our receiving side is shut, the daemon's
    ``A`` can no longer be sent (it gets EPIPE and does not deliver), and whatever it sent
    before is still here to be read."""
    try:
        sock.shutdown(_socket.SHUT_RD)
        sock.setblocking(False)
        return sock.recv(1 << 16)
    except OSError:
        return b""


class _Answer:
    """How far one request got: ``accepted`` (``A``), ``committed`` (we said ``Y``), and
    the final frame, or kind None when the socket broke or we gave up first."""

    def __init__(self) -> None:
        self.accepted = False
        self.committed = False
        self.kind: bytes | None = None
        self.payload = b""
        self.silent = False
        """We gave up on silence (not on a closed socket)."""


def _answer(sock, bear: float = PATIENCE) -> _Answer:
    """Read frames until a final one, answering ``C`` with ``Y``.

    Silence (no ``A`` within ACCEPT_TIMEOUT, or three missed heartbeats after it) makes
    us look whether the daemon runs at all: while it does we go on waiting, until it has
    been silent for its patience. After ``Y`` we wait as long as ``C`` said, whatever
    happens: the message may be on its way.
    """
    import time

    reader = wire.FrameReader()
    got = _Answer()
    heard = time.monotonic()
    sock.settimeout(ACCEPT_TIMEOUT)
    while True:
        try:
            data = sock.recv(1 << 16)
        except InterruptedError:
            continue
        except TimeoutError:
            if not got.committed and time.monotonic() - heard < bear and daemon_alive():
                continue  # running, and busy: wait on
            got.silent = True
            data = b"" if got.accepted else _give_up(sock)
        except OSError:
            data = b""
        if not data:
            return got
        heard = time.monotonic()
        try:
            frames = reader.feed(data)
        except wire.WireError:
            return got
        for kind, payload in frames:
            if kind == wire.ACCEPTED:
                got.accepted = True
                bear = patience(payload)
                sock.settimeout(stall_timeout(payload))
            elif kind == wire.WORKING:
                continue
            elif kind == wire.COMMIT and got.accepted and not got.committed:
                try:
                    sock.sendall(wire.frame(wire.YES))
                except OSError:
                    return got  # it will not send the dot without our Y
                got.committed = True
                sock.settimeout(commit_timeout(payload))
            else:
                got.kind, got.payload = kind, payload
                return got


def deliver(home: str, args: list[bytes], fd: int = 0) -> bytes | None:
    """Hand ``qmail-remote host sender recip...`` (args without argv[0]) and the queue
    file on ``fd`` to qremoted; the report to write, or None to deliver in-process: only
    when the daemon is not running (or refused), so nothing can have been sent by it."""
    for _ in range(RECONNECTS + 1):
        sock = _connect(home)
        if sock is None:
            return None
        try:
            try:
                _send_request(sock, wire.frame(wire.DELIVER_COMMITTED, b"\0".join(args)), fd)
            except OSError:
                return None  # it cannot have begun on a request it did not get whole
            got = _answer(sock)
        finally:
            sock.close()
        if got.kind == wire.REPORT and got.payload[:1] in (b"K", b"Z", b"D", b"r", b"h", b"s"):
            if got.payload.endswith(b"\0"):
                return got.payload
        if got.committed:
            return LOST
        if got.kind is not None or not daemon_alive():
            return None  # refused, or no daemon any more: nothing was sent, deliver here
        if got.silent:
            return NOT_SENT  # running, but silent past its patience: defer, never twice
        # Dropped before Y by a daemon that still runs (a worker that died): ask again.
    return NOT_SENT


def count_fallback(home: str) -> None:
    """Say (in ``qremote/fallbacks``) that this delivery runs in-process: qremoted counts
    the bytes. Nothing is said when that cannot be done; the delivery goes on anyway."""
    path = home.rstrip("/") + "/" + wire.FALLBACKS_PATH
    flags = posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC
    try:
        try:
            fd = posix.open(path, flags, 0o600)
        except FileNotFoundError:  # qremoted never ran here: its folder is made as it would
            posix.mkdir(path.rsplit("/", 1)[0], 0o700)
            fd = posix.open(path, flags, 0o600)
    except OSError:
        return
    try:
        if posix.fstat(fd).st_size < wire.FALLBACKS_MAX:
            posix.write(fd, b".")
    except OSError:
        pass
    finally:
        posix.close(fd)


def status(home: str) -> str | None:
    """qremoted's own account of itself, or None when it is not running."""
    sock = _connect_elsewhere(home)
    if sock is None:
        return None
    try:
        try:
            _send_request(sock, wire.frame(wire.STATUS), None)
        except OSError:
            return None
        got = _answer(sock, STATUS_PATIENCE)
    finally:
        sock.close()
    if got.silent and daemon_alive():
        return f"qremoted runs but did not answer within {STATUS_PATIENCE:g} seconds (busy)\n"
    if got.kind == wire.TEXT:
        return got.payload.decode("utf-8", "replace")
    if got.kind == wire.REFUSED:
        return "refused: " + got.payload.decode("utf-8", "replace")
    return None
