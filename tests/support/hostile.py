"""A hostile SMTP server: scripted byte for byte, for what a well-behaved server never does.

aiosmtpd (``smtpserver.py``) is a real server with scripted replies; this one is not a
server at all, only a peer that reads command lines and answers each with exactly the
bytes a :class:`Step` names: split into several writes, with extra replies nobody asked
for, followed by a hang-up, a stall or an endless flood. It records what it received and
sent, in order, so a test can tell whether a ``2xx`` came after the final dot.

One connection at a time, in a thread, with plain blocking sockets: what happens on the
wire is exactly what the script says.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from tests.support.smtpserver import fresh_ip

STALL_LIMIT = 30.0
"""A stalled or flooding server gives up after this long, whatever the client does."""


@dataclass(frozen=True)
class Step:
    """The answer to one command (or to the connection, for the greeting)."""

    pieces: tuple[bytes, ...] = ()
    """Written one after another, with ``gap`` seconds between them."""
    then: str = "continue"
    """``continue``, ``close``, ``stall`` (say nothing more) or ``flood`` (write
    ``flood`` bytes without end)."""
    gap: float = 0.0
    flood: bytes = b"250-flood flood flood flood\r\n"

    @classmethod
    def reply(cls, data: bytes, then: str = "continue") -> Step:
        return cls((data,), then)


DEFAULTS = {
    "greeting": Step.reply(b"220 hostile.test ESMTP\r\n"),
    "EHLO": Step.reply(b"250-hostile.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
    "HELO": Step.reply(b"250 hostile.test\r\n"),
    "MAIL": Step.reply(b"250 ok\r\n"),
    "RCPT": Step.reply(b"250 ok\r\n"),
    "DATA": Step.reply(b"354 go ahead\r\n"),
    "dot": Step.reply(b"250 queued\r\n"),
    "RSET": Step.reply(b"250 ok\r\n"),
    "QUIT": Step.reply(b"221 bye\r\n", "close"),
}


@dataclass
class Event:
    kind: str
    """``recv`` (a command line), ``dot`` (the end of the message), ``sent``, ``closed``."""
    data: bytes = b""


@dataclass
class HostileServer:
    """``with HostileServer({"dot": Step(...)}) as srv:`` listens on ``srv.ip:25``."""

    script: dict[str, Step] = field(default_factory=dict)
    ip: str = field(default_factory=fresh_ip)
    port: int = 25
    events: list[Event] = field(default_factory=list)

    def __enter__(self) -> HostileServer:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.ip, self.port))
        self._listener.listen(8)
        self._listener.settimeout(0.1)  # accept() is not woken by close() from another thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(STALL_LIMIT + 5)
        self._listener.close()

    # -- what the test reads ------------------------------------------------------------

    @property
    def received_dot(self) -> bool:
        return any(e.kind == "dot" for e in self.events)

    def sent_after_dot(self) -> bytes:
        """Everything written after the final dot arrived (b"" if it never did)."""
        kinds = [e.kind for e in self.events]
        if "dot" not in kinds:
            return b""
        start = kinds.index("dot")
        return b"".join(e.data for e in self.events[start:] if e.kind == "sent")

    def sent(self) -> bytes:
        return b"".join(e.data for e in self.events if e.kind == "sent")

    # -- the peer -----------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    self._talk(conn)
                except OSError:
                    pass
                self.events.append(Event("closed"))

    def _step(self, name: str, index: int = 0) -> Step:
        step = self.script.get(f"{name}{index}") or self.script.get(name)
        return step or DEFAULTS.get(name) or Step.reply(b"502 unknown command\r\n")

    def _do(self, conn: socket.socket, step: Step) -> bool:
        """Carry out one step; False when the connection is over."""
        for i, piece in enumerate(step.pieces):
            if i and step.gap:
                time.sleep(step.gap)
            conn.sendall(piece)
            self.events.append(Event("sent", piece))
        if step.then == "close":
            return False
        if step.then == "stall":
            self._wait_for_close(conn)
            return False
        if step.then == "flood":
            conn.settimeout(STALL_LIMIT)
            deadline = time.monotonic() + STALL_LIMIT
            block = step.flood * max(1, 16384 // len(step.flood))
            while time.monotonic() < deadline and not self._stop.is_set():
                conn.sendall(block)
            return False
        return True

    def _wait_for_close(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        deadline = time.monotonic() + STALL_LIMIT
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue

    def _talk(self, conn: socket.socket) -> None:
        conn.settimeout(STALL_LIMIT)
        if not self._do(conn, self._step("greeting")):
            return
        reader = conn.makefile("rb")
        counts: dict[str, int] = {}
        while True:
            line = reader.readline(65536)
            if not line:
                return
            self.events.append(Event("recv", line))
            verb = line[:4].decode("ascii", "replace").upper().strip()
            index = counts.get(verb, 0)
            counts[verb] = index + 1
            if not self._do(conn, self._step(verb, index)):
                return
            if verb == "DATA" and self._step("DATA", index).pieces[:1] != ():
                first = self._step("DATA", index).pieces[0]
                if first.startswith(b"354"):
                    if not self._read_body(reader):
                        return
                    self.events.append(Event("dot"))
                    if not self._do(conn, self._step("dot")):
                        return

    @staticmethod
    def _read_body(reader) -> bool:
        while True:
            line = reader.readline(1 << 20)
            if not line:
                return False
            if line == b".\r\n":
                return True
