"""``qremote verifyd``: the verifying daemon behind the thin ``qremote-dkimverify``.

The in-process filter pays a Python start-up and dkimpy's import for every incoming
message; this daemon pays them once, and keeps what every message would rebuild: the
settings from control/ (read again when one of their files changes, or on SIGHUP) and
the key records (``dnscache.KeyCache``, for their TTLs). Each message goes through the
very :func:`qremote.verify.build.build` the in-process filter calls, so both paths give
the same bytes.

Who it is, and who may talk to it. It parses mail from the whole internet, so it runs as
qmail-smtpd's own user (qmaild): that user already reads every hostile byte, and holds
nothing worth stealing. It is never qremoted, and refuses to start when it can open a file
under control/domainkeys/ (the signing keys are qmailr's) or when it would run as root
(``--user`` makes root drop to that user first). Its socket is in a directory of its own,
mode 0600, and the kernel's peer credentials must name its own user or root: qmail-smtpd's
filter reaches it, no other local user does.

Bounded under load: at most :data:`MAX_CLIENTS` messages are admitted at once (more are
refused with ``N``, and their clients verify in-process); ``--workers`` threads verify,
so a slow DNS answer holds one thread for at most the message's budget
(dkimverifytimeout) and never the others; and the bytes of messages being verified at
once are bounded by ``--memory`` (a message larger than that is verified alone), which with
the cache's bound and the threads' stacks bounds the daemon's memory under any flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import socket
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from qremote.fdutil import write_all
from qremote.framing import WireError
from qremote.metrics import http
from qremote.metrics.counts import Counts
from qremote.signing.keys import files_in
from qremote.unixsock import accept, peer_credentials, read_frame, send_with_fd
from qremote.verify import wire
from qremote.verify.build import Settings, build, fingerprint
from qremote.verify.dnscache import KeyCache
from qremote.verify.results import Result
from qremote.verify.txt import TxtLookup
from qremote.verify.warmup import warm_up

MAX_CLIENTS = 1000
"""Messages admitted at once (waiting for a thread or being verified). qmail-smtpd's
concurrency is tcpserver's ``-c`` (40 by default); a thousand is a flood, and past it a
client is better off verifying itself than waiting."""
WORKERS = 8
"""Threads verifying at once: enough that a few slow DNS answers do not hold up the rest
(each holds a thread for at most dkimverifytimeout); the work itself is one core's."""
MEMORY = 256 << 20
"""Bytes of messages verified at once, by default (``--memory``)."""
MAX_TEXT = 1000
"""Characters of a log text sent to the filter (an exception's words can be anything);
the filter's limit is 64 KB."""
REQUEST_TIMEOUT = 10.0
"""Seconds a client has to send its request once connected."""


class StartError(Exception):
    """verifyd cannot serve; the text says why."""


def user_ids(user: str) -> tuple[int, int]:
    """(uid, gid) of a user name, or of a number (its gid then the same number)."""
    if user.isdigit():
        try:
            pw = pwd.getpwuid(int(user))
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            return int(user), int(user)
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise StartError(f"no such user: {user}") from None
    return pw.pw_uid, pw.pw_gid


def readable_key(home: str) -> str | None:
    """A file under control/domainkeys/ that this process can open, or None."""
    for path in files_in(os.path.join(home, "control", "domainkeys")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        os.close(fd)
        return path
    return None


def become(home: str, user: str | None) -> None:
    """Make the socket's directory and drop to ``user`` when started as root; refuse to
    go on as root, or as anyone who can read a signing key."""
    folder = os.path.join(home, wire.SOCKET_DIR)
    if os.geteuid() != 0 and user is not None and user_ids(user)[0] != os.geteuid():
        raise StartError(f"only root can become {user}")
    if os.geteuid() == 0:
        if user is None:
            raise StartError(
                "verifyd parses mail from the internet and does not run as root: "
                "--user qmaild (qmail-smtpd's user), or start it as that user"
            )
        uid, gid = user_ids(user)
        if uid == 0:
            raise StartError("verifyd does not run as root: name qmail-smtpd's user")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chown(folder, uid, gid)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    key = readable_key(home)
    if key is not None:
        raise StartError(
            f"this user (uid {os.getuid()}) can read the signing key {key}: run verifyd as "
            "qmail-smtpd's user (qmaild), which must not read control/domainkeys/"
        )


OUTCOMES = {
    wire.QUEUE: "verified",
    wire.UNCHANGED: "unchanged",
    wire.REJECT: "rejected",
    wire.DEFER: "deferred",
}
"""Each answer's name in ``qremote_verify_messages_total`` and the status text."""


class ByteBudget:
    """Bytes of messages in verification at once; a message larger than the whole budget
    waits until it is alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = asyncio.Condition()

    async def take(self, size: int) -> int:
        charge = min(size, self.limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + charge <= self.limit)
            self.used += charge
        return charge

    async def give(self, charge: int) -> None:
        async with self._changed:
            self.used -= charge
            self._changed.notify_all()


class Verifyd:
    def __init__(
        self,
        home: str,
        workers: int = WORKERS,
        memory: int = MEMORY,
        log_fd: int = 2,
        metrics: http.Endpoint | None = None,
    ) -> None:
        self.home = os.path.abspath(home)
        self.workers = workers
        self.memory = memory
        self.log_fd = log_fd
        self.uid = os.getuid()
        self.cache = KeyCache()
        self.counts = Counts()
        """Since start: what ``/metrics`` and the status text agree on."""
        self.metrics = metrics
        self.clients = 0
        self.verifying = 0
        self._settings: Settings | None = None
        self._fingerprint: tuple | None = None
        self._settings_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="verify")

    def log(self, text: str) -> None:
        with contextlib.suppress(OSError):
            write_all(self.log_fd, (text.replace("\n", " ") + "\n").encode("utf-8", "replace"))

    # -- settings ------------------------------------------------------------------------

    def settings(self) -> Settings:
        """The settings, read again when a control file they come from has changed.
        Raises what Settings.load raises (the message then passes on unchanged, as
        in-process)."""
        now = fingerprint(self.home)
        with self._settings_lock:
            if self._settings is None or now != self._fingerprint:
                self._settings = None
                self._settings = Settings.load(self.home)
                self._fingerprint = now
            return self._settings

    def reload(self) -> None:
        with self._settings_lock:
            self._settings = None
        self.log("SIGHUP: control files will be read again")

    # -- serving -------------------------------------------------------------------------

    def listen(self) -> socket.socket:
        """The socket, mode 0600 in a directory of our own (made here, or by become())."""
        folder = os.path.join(self.home, wire.SOCKET_DIR)
        path = os.path.join(self.home, wire.SOCKET_PATH)
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            os.chdir(self.home)
        except OSError as e:
            raise StartError(f"{folder}: {e.strerror}") from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(wire.SOCKET_PATH)
            sock.bind(wire.SOCKET_PATH)  # relative: a socket path is at most 107 bytes
            os.chmod(wire.SOCKET_PATH, 0o600)
            sock.listen(socket.SOMAXCONN)
        except OSError as e:
            sock.close()
            raise StartError(f"{path}: {e.strerror}") from None
        finally:
            os.umask(old)
        sock.setblocking(False)
        return sock

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until SIGTERM or SIGINT; then the messages in hand are finished."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        listener = self.listen()
        self.budget = ByteBudget(self.memory)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        tasks: set[asyncio.Task[None]] = set()
        accepting = loop.create_task(self._accept(listener, tasks))
        serving = None
        if self.metrics is not None:
            try:
                metrics_socket = http.listen(self.metrics.ip, self.metrics.port)
            except OSError as e:
                accepting.cancel()
                listener.close()
                raise StartError(f"metrics at {self.metrics.url}: {e.strerror}") from None
            from qremote.metrics.exposition import CONTENT_TYPE  # start-up: warm_up loaded it

            serving = loop.create_task(http.serve(metrics_socket, self._page, CONTENT_TYPE))
            self.log(f"metrics at {self.metrics.url}")
        self.log(
            f"verifyd {os.getpid()} (uid {self.uid}) serving {self.home}/{wire.SOCKET_PATH}: "
            f"{self.workers} threads, {self.memory >> 20} MB of messages at once"
        )
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            accepting.cancel()
            if serving is not None:
                serving.cancel()
                metrics_socket.close()
            with contextlib.suppress(OSError):
                os.unlink(wire.SOCKET_PATH)
            listener.close()
            if tasks:
                await asyncio.wait(set(tasks))
            self.pool.shutdown(wait=True)
            self.log(f"verifyd {os.getpid()} stopped: {self._tally()}")

    async def _accept(self, listener: socket.socket, tasks: set[asyncio.Task[None]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn = await accept(listener, self.log)
            task = loop.create_task(self._serve(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        """One client, start to end; whatever goes wrong is logged, never raised."""
        fds: list[int] = []
        self.clients += 1
        try:
            await self._handle(conn, fds)
        except Exception as e:  # noqa: BLE001 - one bad client must not reach the loop
            self.log(f"client failed: {e.__class__.__name__}: {e}")
        finally:
            self.clients -= 1
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            conn.close()

    async def _send(self, conn: socket.socket, data: bytes, fd: int | None = None) -> bool:
        try:
            if fd is None:
                await asyncio.get_running_loop().sock_sendall(conn, data)
            else:
                await send_with_fd(conn, data, fd)
        except OSError:
            return False
        return True

    async def _refuse(self, conn: socket.socket, pid: int, why: str) -> None:
        self.counts.add("verify_messages", ("refused",))
        self.log(f"refused pid {pid}: {why}")
        await self._send(conn, wire.frame(wire.REFUSED, why.encode()))

    async def _handle(self, conn: socket.socket, fds: list[int]) -> None:
        pid, uid = peer_credentials(conn)
        if uid not in (0, self.uid):
            await self._refuse(conn, pid, f"uid {uid} may not use verifyd")
            return
        try:
            kind, payload = await asyncio.wait_for(
                read_frame(conn, wire.reader(), fds), REQUEST_TIMEOUT
            )
        except (TimeoutError, WireError, OSError, ConnectionError) as e:
            self.log(f"dropped pid {pid}: {e.__class__.__name__}: {e}")
            return
        if kind == wire.STATUS:
            await self._send(conn, wire.frame(wire.TEXT, self.status().encode()))
            return
        why = _bad_request(kind, payload, fds)
        if why is None and self.clients > MAX_CLIENTS:
            why = f"busy: {MAX_CLIENTS} messages in hand"
        if why is not None:
            await self._refuse(conn, pid, why)
            return
        request = wire.read_verify(payload)
        assert request is not None  # _bad_request said so
        await self._verify(conn, pid, fds[0], *request)

    async def _verify(
        self, conn: socket.socket, pid: int, fd: int, size: int, remote_ip: str | None
    ) -> None:
        since = time.monotonic()
        answer: tuple[bytes, int | None, str, list[Result]] | None = None
        settings: Settings | None = None
        try:
            settings = self.settings()
        except Exception as e:  # noqa: BLE001 - as in-process: the message passes unchanged
            answer = (wire.UNCHANGED, None, _skipped(e), [])
        budget = settings.budget if settings is not None else 0
        if not await self._send(conn, wire.frame(wire.ACCEPTED, b"%d" % (budget + wire.MARGIN))):
            return  # the client is gone: it runs qmail-queue itself, or nothing does
        if answer is None:
            assert settings is not None
            charge = await self.budget.take(size)
            self.verifying += 1
            try:
                answer = await asyncio.get_running_loop().run_in_executor(
                    self.pool, self._work, settings, fd, size, since, remote_ip
                )
            finally:
                self.verifying -= 1
                await self.budget.give(charge)
        kind, out, text, found = answer
        text = text[:MAX_TEXT]
        self._count(kind, found, time.monotonic() - since)
        if text:
            self.log(f"pid {pid}: {text}")
        try:
            await self._send(conn, wire.frame(kind, text.encode("utf-8", "replace")), out)
        finally:
            if out is not None:
                os.close(out)

    def _work(
        self, settings: Settings, fd: int, size: int, since: float, remote_ip: str | None
    ) -> tuple[bytes, int | None, str, list[Result]]:
        """In a worker thread: (answer kind, new message fd or None, log text, results)."""
        try:
            lookup = TxtLookup(settings.servers, settings.budget, self.cache, since)
            out, verdict, found = build(settings, fd, size, lookup, remote_ip)
        except BaseException as e:  # noqa: BLE001 - never lose a message: pass it on unchanged
            return wire.UNCHANGED, None, _skipped(e), []
        if verdict is None:
            return wire.QUEUE, out, "", found
        os.close(out)
        kind = wire.REJECT if verdict.action == "reject" else wire.DEFER
        return kind, None, f"{verdict.action}: {verdict.text}", found

    def _count(self, kind: bytes, found: list[Result], seconds: float) -> None:
        """In the loop's thread (never a worker's): a scrape reads these."""
        c = self.counts
        c.add("verify_messages", (OUTCOMES.get(kind, "deferred"),))
        for result in found:
            c.add("verify_results", (result.method, result.result))
        c.observe("verify_seconds", (), seconds)

    def numbers(self) -> Counts:
        """The counts with this moment's gauges."""
        c = self.counts
        c.set("verify_in_hand", (), self.verifying)
        c.values["verify_key_cache"] = {("hit",): self.cache.hits, ("miss",): self.cache.misses}
        return c

    def _page(self) -> bytes:
        # start-up: prometheus_client only when served (warm_up loaded it before become())
        from qremote.metrics.counts import VERIFY_SERIES
        from qremote.metrics.exposition import render

        return render(self.numbers(), VERIFY_SERIES)

    def _tally(self) -> str:
        c = self.counts
        names = (*OUTCOMES.values(), "refused")
        n = {name: int(c.get("verify_messages", (name,))) for name in names}
        return (
            f"{n['verified']} verified, {n['unchanged']} passed unchanged, {n['rejected']} "
            f"rejected, {n['deferred']} deferred, {n['refused']} refused"
        )

    def status(self) -> str:
        return (
            f"verifyd pid {os.getpid()} uid {self.uid}: {self.clients - 1} other clients, "
            f"{self.verifying} verifying; {self._tally()}; "
            f"{len(self.cache)} key records cached ({self.cache.hits} hits, "
            f"{self.cache.misses} misses)\n"
        )


def _skipped(e: BaseException) -> str:
    """The log text for a message passed on unchanged: the in-process filter's words."""
    return f"verification skipped, message passed on unchanged: {e.__class__.__name__}: {e}"


def _bad_request(kind: bytes, payload: bytes, fds: list[int]) -> str | None:
    """Why a request cannot be served, or None: a ``V`` with a size and the message."""
    if kind != wire.VERIFY:
        return "unknown request"
    if len(fds) != 1:
        return "no message passed"
    request = wire.read_verify(payload)
    if request is None:
        return "no message size"
    try:
        st = os.fstat(fds[0])
    except OSError as e:
        return f"message: {e.strerror}"
    if not stat.S_ISREG(st.st_mode) or st.st_size != request[0]:
        return "the message is not a file of the size named"
    return None


M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20


def bound_malloc() -> None:
    """Make the C allocator give large buffers back when they are freed. By default glibc
    raises its mmap threshold after the first large free and keeps later buffers of that
    size in per-thread arenas, so each thread ends up holding a whole message's worth long
    after it is done: with eight threads the daemon's size would follow the threads, not
    ``--memory``. A fixed threshold (buffers of a MiB or more are mapped and unmapped on
    their own) and two arenas make its size follow the messages in hand."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass  # not glibc: its own allocator's habits


def main(
    home: str, user: str | None, workers: int, memory: int, metrics: http.Endpoint | None = None
) -> str:
    """``qremote verifyd``: serve in the foreground until SIGTERM."""
    bound_malloc()
    try:
        warm_up(metrics is not None)  # before become(): the new user may not read them
        become(home, user)
        asyncio.run(Verifyd(home, workers, memory, metrics=metrics).run())
    except StartError as e:
        return f"verifyd: {e}"
    return ""
