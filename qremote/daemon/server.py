"""qremoted: one long-lived process that runs many deliveries at once.

The thin ``qmail-remote`` connects to ``$QMAILHOME/qremote/qremoted.sock``, passes its
arguments and its stdin (the queue file, by descriptor), and gets the report back. The
daemon runs exactly the delivery core the standalone path runs, with what it keeps
between deliveries: parsed control files (reloaded when a file in ``control/`` changes,
or on SIGHUP), a caching DNS resolver, the Redis backend, idle SMTP connections, and
(per process, in their own modules) keys and TLS contexts.

Before the daemon answers ``A`` nothing of the message has left, so the client may
deliver it itself; the daemon therefore refuses (``N``) rather than fail whenever it
cannot take a delivery cleanly: shutting down, sign-only mode, stdin not a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import stat
import struct
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qremote import report
from qremote.control import ControlError
from qremote.daemon import wire
from qremote.daemon.client import RELATIVE_PATH, SOCKET_NAME
from qremote.delivery import Resources, deliver
from qremote.fdutil import write_all
from qremote.settings import Settings, load_settings
from qremote.smtp.pool import ConnectionPool
from qremote.tls import contexts

if TYPE_CHECKING:
    from qremote.groups.caps import SharedState

REQUEST_TIMEOUT = 30.0
"""A client that connects and says nothing is dropped after this long."""
MAX_FDS = 4

STOPPED = (
    b"Zqremoted was stopped during the delivery; the message may or may not have been "
    b"sent, qmail will try again. (#4.3.0)\n\0"
)


class StartError(Exception):
    """The daemon cannot start; the message says why."""


def allowed(peer_uid: int, own_uid: int) -> bool:
    """Only the user the daemon runs as (qmailr) and root may hand it deliveries."""
    return peer_uid in (0, own_uid)


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end, from the kernel (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def control_signature(control: str) -> tuple:
    """What changes when any file directly in ``control/`` is edited, added or removed.

    Editors and ``qremote keys`` replace files by rename, which changes the inode; an
    in-place edit changes mtime or size. Keys have their own stat-keyed cache.
    """
    entries = []
    try:
        with os.scandir(control) as it:
            for entry in it:
                try:
                    st = entry.stat()
                except OSError:
                    continue
                entries.append((entry.name, st.st_ino, st.st_mtime_ns, st.st_size))
    except OSError:
        return ()
    return tuple(sorted(entries))


def read_queue_file(fd: int) -> bytes:
    """The message from the client's stdin, from its current offset, without moving it:
    if the client ends up delivering in-process it reads the same bytes."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise OSError("not a regular file")
    offset = os.lseek(fd, 0, os.SEEK_CUR)
    chunks: list[bytes] = []
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


class Generation:
    """Settings and what is built from them, replaced together when control/ changes."""

    def __init__(self, settings: Settings, shared) -> None:
        import dns.resolver

        from qremote.routing import resolve

        self.settings = settings
        resolver = resolve.make_resolver(
            settings.nameservers, settings.timeout_connect, settings.timeout_remote
        )
        resolver.cache = dns.resolver.LRUCache(100_000)  # honours each answer's TTL
        self.resources = Resources(resolver, shared, ConnectionPool(settings.reuse))


class SettingsCache:
    """The current :class:`Generation`, rebuilt when ``control/`` changes or on SIGHUP."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.control = os.path.join(home, "control")
        self.current: Generation | None = None
        self._signature: tuple | None = None
        self._shared: dict[tuple[str, int], SharedState | None] = {}
        """Redis backends by (url, lease), kept for the process: in-flight deliveries may
        still hold leases renewed through an older one."""
        self.retired: list[ConnectionPool] = []
        self._closing: set[asyncio.Task] = set()

    def get(self) -> Generation:
        """The current generation, reloaded first if control/ changed.

        A bad control file raises ControlError (the delivery is deferred with qmail's
        text) and is read again on the next delivery. On a reload the old pool's idle
        connections are closed: they were opened under the old settings.
        """
        signature = control_signature(self.control)
        if self.current is None or signature != self._signature:
            settings = load_settings(self.home)
            old = self.current
            self.current = Generation(settings, self._shared_for(settings))
            self._signature = signature
            # Deliveries in flight may still return connections to the old pool.
            self.retired = [pool for pool in self.retired if len(pool)]
            if old is not None and old.resources.pool is not None:
                self.retired.append(old.resources.pool)
                task = asyncio.get_running_loop().create_task(old.resources.pool.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        return self.current

    def forget(self) -> None:
        """SIGHUP: read everything again on the next delivery."""
        self._signature = None
        contexts.forget()

    def _shared_for(self, settings: Settings) -> SharedState | None:
        if not settings.shared_state:
            return None
        key = (settings.shared_state, settings.shared_lease)
        if key not in self._shared:
            from qremote.groups.caps import shared_backend

            self._shared[key] = shared_backend(*key)
        return self._shared[key]

    async def close(self) -> None:
        pools = list(self.retired)
        if self.current is not None and self.current.resources.pool is not None:
            pools.append(self.current.resources.pool)
        for pool in pools:
            await pool.close()
        for backend in self._shared.values():
            if backend is not None:
                await backend.close()


@dataclass
class InFlight:
    pid: int
    host: str
    sender: str
    recipients: int
    started: float = field(default_factory=time.monotonic)
    owed: bytes = b""
    """The part of a heartbeat the socket did not take; it goes out ahead of the report."""


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def _recvmsg(sock: socket.socket) -> tuple[bytes, list]:
    """recvmsg on a non-blocking socket; asyncio has no such call of its own."""
    loop = asyncio.get_running_loop()
    space = socket.CMSG_SPACE(MAX_FDS * 4)
    while True:
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(1 << 16, space, socket.MSG_CMSG_CLOEXEC)
            return data, ancillary
        except (BlockingIOError, InterruptedError):
            pass
        ready = loop.create_future()
        loop.add_reader(sock.fileno(), _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(sock.fileno())


async def read_request(sock: socket.socket, fds: list[int]) -> tuple[bytes, bytes]:
    """One request frame; descriptors that came with it are appended to ``fds``."""
    reader = wire.FrameReader()
    while True:
        data, ancillary = await _recvmsg(sock)
        for level, kind, cdata in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(cdata) - len(cdata) % 4
                fds.extend(int.from_bytes(cdata[i : i + 4], "little") for i in range(0, usable, 4))
        if not data:
            raise ConnectionError("the client closed before sending its request")
        frames = reader.feed(data)
        if frames:
            return frames[0]


def _one_line(data: bytes, limit: int = 300) -> str:
    text = data.rstrip(b"\0\n").decode("utf-8", "replace")
    return text.replace("\n", " / ")[:limit]


HEARTBEAT = 20.0
"""Seconds between ``W`` frames while a delivery runs (the client gives up after three
silent intervals): long enough to cost nothing, short enough that a stuck daemon holds a
qmail-send delivery slot for a minute, not for ever."""


class Daemon:
    def __init__(
        self, home: str, grace: float = 30.0, log_fd: int = 2, heartbeat: float = HEARTBEAT
    ) -> None:
        self.home = os.path.abspath(home)
        self.grace = grace
        self.heartbeat = heartbeat
        self.log_fd = log_fd
        self.uid = os.geteuid()
        self.cache = SettingsCache(self.home)
        self.inflight: dict[asyncio.Task, InFlight] = {}
        self.tasks: set[asyncio.Task] = set()
        self.stopping = False
        self.done = 0
        self.started = time.monotonic()

    # -- logging -------------------------------------------------------------------------

    def log(self, line: str) -> None:
        """One line per event on stderr, for multilog (which adds the timestamp)."""
        with contextlib.suppress(OSError):
            write_all(self.log_fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))

    # -- starting and stopping -----------------------------------------------------------

    def _listen(self) -> tuple[int, socket.socket]:
        state = os.path.join(self.home, "qremote")
        try:
            os.makedirs(state, mode=0o700, exist_ok=True)
            os.chdir(self.home)
            lock = os.open("qremote/qremoted.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StartError(f"{state}: {e.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise StartError(f"another qremoted is running for {self.home}") from None
        # Relative to the qmail home: a Unix socket path is limited to 107 bytes.
        path = RELATIVE_PATH
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(256)
        except OSError as e:
            sock.close()
            os.close(lock)
            raise StartError(f"{state}/{SOCKET_NAME}: {e.strerror}") from None
        finally:
            os.umask(old)
        sock.setblocking(False)
        return lock, sock

    async def run(self, ready: asyncio.Event | None = None) -> None:
        lock, listener = self._listen()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        accepting = loop.create_task(self._accept(listener))
        if self.uid == 0:
            self.log("running as root: run it as qmailr, or the files it creates are root's")
        self.log(f"qremoted {os.getpid()} serving {self.home}/qremote/{SOCKET_NAME}")
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            self.stopping = True
            accepting.cancel()
            with contextlib.suppress(OSError):
                os.unlink(RELATIVE_PATH)
            listener.close()
            await self._finish_in_flight()
            await self.cache.close()
            os.close(lock)
            self.log(f"qremoted {os.getpid()} stopped after {self.done} deliveries")

    def _reload(self) -> None:
        self.cache.forget()
        self.log("SIGHUP: control files will be read again")

    async def _finish_in_flight(self) -> None:
        """Give in-flight deliveries ``grace`` seconds, then hand them back as ``Z``."""
        if not self.tasks:
            return
        self.log(f"stopping: {len(self.inflight)} deliveries in flight, {self.grace:g}s grace")
        _done, pending = await asyncio.wait(set(self.tasks), timeout=self.grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as e:
                self.log(f"accept failed: {e.strerror}")
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._serve(conn))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    # -- one client ----------------------------------------------------------------------

    async def _send(self, conn: socket.socket, data: bytes) -> bool:
        try:
            await asyncio.get_running_loop().sock_sendall(conn, data)
        except OSError:
            return False
        return True

    async def _serve(self, conn: socket.socket) -> None:
        """One client, start to end; whatever goes wrong is logged, never raised."""
        fds: list[int] = []
        try:
            await self._handle(conn, fds)
        except Exception as e:  # noqa: BLE001 - one bad client must not reach the loop
            self.log(f"client failed: {e.__class__.__name__}: {e}")
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            conn.close()

    async def _handle(self, conn: socket.socket, fds: list[int]) -> None:
        pid, uid = peer_credentials(conn)
        if not allowed(uid, self.uid):
            self.log(f"refused pid {pid}: uid {uid} may not use qremoted")
            await self._send(conn, wire.frame(wire.REFUSED, b"not allowed"))
            return
        try:
            kind, payload = await asyncio.wait_for(read_request(conn, fds), REQUEST_TIMEOUT)
        except (TimeoutError, wire.WireError, OSError, ConnectionError) as e:
            self.log(f"dropped pid {pid}: {e.__class__.__name__}: {e}")
            return
        if kind == wire.STATUS:
            await self._send(conn, wire.frame(wire.TEXT, self.status().encode()))
        elif kind == wire.DELIVER:
            await self._deliver(conn, pid, wire.split_args(payload), fds[:1])
        else:
            await self._send(conn, wire.frame(wire.REFUSED, b"unknown request"))

    def _refusal(self, args: list[bytes], fds: list[int]) -> str | None:
        """Why the client should deliver this one itself, or None to take it."""
        if self.stopping:
            return "shutting down"
        if len(args) < 3:
            return "invoked improperly"
        if not fds:
            return "no queue file passed"
        try:
            if not stat.S_ISREG(os.fstat(fds[0]).st_mode):
                return "stdin is not a regular file"
        except OSError as e:
            return f"stdin: {e.strerror}"
        if os.path.exists(os.path.join(self.home, "control", "signonly")):
            return "sign-only mode runs qmail-remote.orig from the client"
        return None

    async def _deliver(self, conn: socket.socket, pid: int, args: list[bytes], fds: list) -> None:
        refusal = self._refusal(args, fds)
        if refusal is not None:
            self.log(f"refused pid {pid}: {refusal}")
            await self._send(conn, wire.frame(wire.REFUSED, refusal.encode()))
            return
        host = args[0].decode("utf-8", "surrogateescape")
        sender = args[1].decode("utf-8", "replace")
        promise = f"{self.heartbeat:g}".encode()
        if not await self._send(conn, wire.frame(wire.ACCEPTED, promise)):
            # The client gave up waiting and delivers it itself (see client._give_up).
            self.log(f"pid {pid} stopped waiting before the delivery began; not delivered here")
            return
        task = asyncio.current_task()
        assert task is not None  # a connection is always served by a task
        job = self.inflight[task] = InFlight(pid, host, sender, len(args) - 2)
        try:
            out = await self._beating(conn, job, self._outcome(host, args, fds[0]))
        except asyncio.CancelledError:
            out = STOPPED
        except Exception as e:  # noqa: BLE001 - every failure must become a Z report
            out = report.internal_error(f"{e.__class__.__name__}: {e}") + b"\0"
        finally:
            del self.inflight[task]
        self.done += 1
        handed_back = await self._send(conn, job.owed + wire.frame(wire.REPORT, out))
        reports = out.split(b"\0")[:-1]
        letters = "".join(r[:1].decode("ascii", "replace") for r in reports[:-1])
        if len(letters) > 10:  # keep the line short: counts instead
            letters = " ".join(f"{letters.count(c)}{c}" for c in "rhs" if c in letters)
        self.log(
            f"delivery pid {pid} to {host} from <{sender}> rcpt {letters or '-'}: "
            f"{_one_line(reports[-1] if reports else out)} ({time.monotonic() - job.started:.2f}s)"
            + ("" if handed_back else "; the client had stopped waiting, qmail will retry")
        )

    async def _beating(self, conn: socket.socket, job: InFlight, work: Awaitable[bytes]) -> bytes:
        """Await ``work``, saying ``W`` to the client every ``heartbeat`` seconds meanwhile.

        A heartbeat never waits for the client: what the socket does not take at once is
        left in ``job.owed`` for the report to carry ahead of it, so the stream never
        holds half a frame. Cancelled, it cancels ``work`` and waits for it, so an SMTP
        session is aborted rather than left open.
        """
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.heartbeat)
                if done:
                    return task.result()
                data = job.owed or wire.frame(wire.WORKING)
                try:
                    job.owed = data[conn.send(data) :]
                except OSError:
                    pass  # nothing went out: still owed, or a beat skipped
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _outcome(self, host: str, args: list[bytes], fd: int) -> bytes:
        try:
            generation = self.cache.get()
        except ControlError as e:
            return report.control_error(str(e)) + b"\0"
        try:
            message = read_queue_file(fd)
        except OSError:
            return report.READ_ERROR + b"\0"
        outcome = await deliver(
            generation.settings, host, args[1], args[2:], message, generation.resources
        )
        return outcome.wire()

    # -- status --------------------------------------------------------------------------

    def status(self) -> str:
        now = time.monotonic()
        lines = [
            f"qremoted pid {os.getpid()}, up {now - self.started:.0f}s, "
            f"{self.done} deliveries done, {len(self.inflight)} in flight"
        ]
        for job in self.inflight.values():
            lines.append(
                f"  pid {job.pid} to {job.host} from <{job.sender}>, "
                f"{job.recipients} recipients, {now - job.started:.1f}s"
            )
        pools = list(self.cache.retired)
        if self.cache.current is not None and self.cache.current.resources.pool is not None:
            pools.append(self.cache.current.resources.pool)
        idle = [line for pool in pools for line in pool.describe()]
        lines.append(f"cached connections: {len(idle)}")
        lines.extend(f"  {line}" for line in idle)
        return "\n".join(lines) + "\n"
