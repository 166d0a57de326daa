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
"""After the daemon said ``A`` the message may be on its way: only a retry is safe."""

ACCEPT_TIMEOUT = 10.0
"""Seconds qremoted has to say ``A``; it does so as soon as it has read the request."""

STALL_BEATS = 3
"""After ``A``, a delivery is given up on (``Z``) when this many of the daemon's promised
heartbeat intervals pass without a word: qmail-remote must never hang for good, and the
daemon's own time-outs cannot help when the daemon itself is stuck."""


def stall_timeout(accepted_payload: bytes) -> float | None:
    """Seconds of silence to allow after ``A`` + interval; None (wait for ever, as for an
    older qremoted that sends no heartbeat) when the payload names no usable interval."""
    try:
        interval = float(accepted_payload)
    except ValueError:
        return None
    if not 0 < interval < 86400:
        return None
    return interval * STALL_BEATS


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


def _answer(sock) -> tuple:
    """Read frames until a final one; returns (accepted, kind, payload).

    kind is None when the socket broke or spoke nonsense before a final frame. A daemon
    that has not said ``A`` within ACCEPT_TIMEOUT (stopped, wedged) is given up on; once
    it has, it must keep saying ``W`` as it promised, or be given up on (kind None).
    """
    reader = wire.FrameReader()
    accepted = False
    sock.settimeout(ACCEPT_TIMEOUT)
    while True:
        try:
            data = sock.recv(1 << 16)
        except InterruptedError:
            continue
        except TimeoutError:
            data = b"" if accepted else _give_up(sock)
        except OSError:
            data = b""
        if not data:
            return accepted, None, b""
        try:
            frames = reader.feed(data)
        except wire.WireError:
            return accepted, None, b""
        for kind, payload in frames:
            if kind == wire.ACCEPTED:
                accepted = True
                sock.settimeout(stall_timeout(payload))
            elif kind == wire.WORKING:
                continue
            else:
                return accepted, kind, payload


def deliver(home: str, args: list[bytes], fd: int = 0) -> bytes | None:
    """Hand ``qmail-remote host sender recip...`` (args without argv[0]) and the queue
    file on ``fd`` to qremoted; the report to write, or None to deliver in-process."""
    sock = _connect(home)
    if sock is None:
        return None
    try:
        try:
            _send_request(sock, wire.deliver_request(args), fd)
        except OSError:
            return None  # it cannot have begun on a request it did not get whole
        accepted, kind, payload = _answer(sock)
    finally:
        sock.close()
    if kind == wire.REPORT and payload[:1] in (b"K", b"Z", b"D", b"r", b"h", b"s"):
        if payload.endswith(b"\0"):
            return payload
    if accepted:
        return LOST
    return None


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
        _, kind, payload = _answer(sock)
    finally:
        sock.close()
    if kind == wire.TEXT:
        return payload.decode("utf-8", "replace")
    if kind == wire.REFUSED:
        return "refused: " + payload.decode("utf-8", "replace")
    return None
