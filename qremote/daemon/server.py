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

Under load: every client is accepted and answered ``A`` at once while the descriptor
limit has room (:mod:`~qremote.daemon.descriptors`); beyond it clients wait in the
listening socket's backlog. At most ``deliveries`` of them deliver at the same time, the
rest wait their turn (reading no message yet, so memory stays bounded at any number).
Clients that ask with ``E`` are asked ``C`` before the final dot and the dot goes only
after their ``Y`` (wire.py): a client that stopped waiting makes the delivery stop
without the dot, logged as abandoned, so no message is ever sent that its client
reported as not sent.

This module is the runner: the lock, the accept loop, each delivery with its heartbeats,
SIGTERM and SIGHUP. Its parts: ``listener`` (who may talk, reading a request and the
queue file), ``generations`` (the settings and what is built from them), ``formatting``
(the log line and the status text), ``wire`` (the frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import stat
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from qremote import report
from qremote.atomic import replace_unsynced
from qremote.control import ControlError
from qremote.daemon import scrape, wire
from qremote.daemon.descriptors import Room, raise_limit
from qremote.daemon.formatting import abandoned_line, delivery_line, one_line, status_text
from qremote.daemon.generations import SettingsCache
from qremote.daemon.listener import allowed, peer_credentials, read_queue_file, read_request
from qremote.daemon.siblings import Siblings
from qremote.daemon.wire import RELATIVE_PATH, SOCKET_NAME
from qremote.delivery import Outcome, deliver
from qremote.fdutil import write_all
from qremote.metrics import http, record
from qremote.metrics.counts import SERIES, Counts, group_label
from qremote.metrics.trace import Trace
from qremote.routing.dnsquery import LOOKUPS
from qremote.smtp.pool import ConnectionPool
from qremote.smtp.session import Abandoned, BeforeDot
from qremote.unixsock import accept

REQUEST_TIMEOUT = 30.0
"""A client that connects and says nothing is dropped after this long."""

DELIVERIES = 5000
"""Deliveries that run at the same time by default (``qremote daemon --deliveries``);
fewer when the descriptor limit has room for fewer. The rest wait their turn."""

COMMIT_ANSWER = 60.0
"""Seconds a client has to answer ``C`` with ``Y``; a client that does not is taken to
have stopped waiting (it answers at once unless its machine is starved)."""

STATUS_EVERY = 1.0
"""Seconds between a worker's status writes (what ``qremote status`` shows of the others)."""

PATIENCE = 300.0
"""Seconds of silence a client bears from a running daemon (``--patience``), and the
time it waits after ``Y`` beyond the server's own time-out for the reply to the dot
(``timeoutremote``): the daemon's loop may be late under load, and a client that gave up
after ``Y`` would report a delivery that may have happened."""


class StartError(Exception):
    """The daemon cannot start; the message says why."""


@dataclass
class InFlight:
    pid: int
    host: str
    sender: str
    recipients: int
    started: float = field(default_factory=time.monotonic)
    owed: bytes = b""
    """The part of a heartbeat the socket did not take; it goes out ahead of the report."""
    committing: bool = False
    """The commit exchange owns the socket: no heartbeat may interleave with it."""
    bound: float = 0.0
    """Seconds the client must wait after ``Y`` (the dot's time-out and the slack)."""
    delivering: bool = False
    """Its turn came (False: waiting for one of the ``deliveries`` places)."""
    trace: Trace = field(default_factory=Trace)
    """What the delivery did so far (the JSON record, the counts)."""


HEARTBEAT = 20.0
"""Seconds between ``W`` frames while a delivery runs (the client gives up after three
silent intervals): long enough to cost nothing, short enough that a stuck daemon holds a
qmail-send delivery slot for a minute, not for ever."""


class Daemon:
    def __init__(
        self,
        home: str,
        grace: float = 30.0,
        log_fd: int = 2,
        heartbeat: float = HEARTBEAT,
        deliveries: int = DELIVERIES,
        clients: int | None = None,
        patience: float = PATIENCE,
        workers: int = 1,
        metrics: http.Endpoint | None = None,
        log_format: str = "text",
    ) -> None:
        self.home = os.path.abspath(home)
        self.deliveries = deliveries
        self.patience = patience
        self.workers = workers
        self.worker: int | None = None
        """This process's number among the workers (None: the only process)."""
        self.clients = clients
        """Clients admitted at once; None: as many as the descriptor limit has room for."""
        self.room: Room | None = None
        self.grace = grace
        self.heartbeat = heartbeat
        self.log_fd = log_fd
        self.uid = os.geteuid()
        self.counts = Counts()
        """Since start: what ``/metrics``, ``qremote status`` and the records agree on."""
        self.metrics = metrics
        """Where ``/metrics`` is served (None: not at all)."""
        self.metrics_socket: socket.socket | None = None
        self._dns_base: dict[tuple[str, ...], float] = {}
        """DNS lookups a worker's predecessor counted (this process counts its own)."""
        self.json = log_format == "json"
        """Deliveries logged as JSON records (``--log-format json``), not text lines."""
        self.cache = SettingsCache(self.home, self.counts)
        self.inflight: dict[asyncio.Task[None], InFlight] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.done = 0
        self.abandoned = 0
        self.started = time.monotonic()
        self.work: asyncio.Semaphore | None = None
        self.admitted = asyncio.Event()
        self.siblings: Siblings | None = None
        """With workers: the channels to the others (made by the master before it forks)."""

    # -- logging -------------------------------------------------------------------------

    def log(self, line: str) -> None:
        """One line per event on stderr, for multilog (which adds the timestamp)."""
        if self.worker is not None and not line.startswith("{"):
            line = f"worker {self.worker}: {line}"
        with contextlib.suppress(OSError):
            write_all(self.log_fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))

    # -- starting and stopping -----------------------------------------------------------

    def _listen(self) -> tuple[int, socket.socket]:
        """The single-instance lock, the alive lock (held for life: clients look at it
        before they give up on us) and the listening socket, backlog as deep as the
        kernel allows (clients queue there while we are at our limit)."""
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
        try:
            alive = os.open(wire.ALIVE_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(alive, fcntl.LOCK_EX)  # a client's probe holds it for a moment
        except OSError as e:
            os.close(lock)
            raise StartError(f"{state}/qremoted.alive: {e.strerror}") from None
        self._alive = alive
        # Relative to the qmail home: a Unix socket path is limited to 107 bytes.
        path = RELATIVE_PATH
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(socket.SOMAXCONN)
        except OSError as e:
            sock.close()
            os.close(alive)
            os.close(lock)
            raise StartError(f"{state}/{SOCKET_NAME}: {e.strerror}") from None
        finally:
            os.umask(old)
        sock.setblocking(False)
        return lock, sock

    def start(self) -> tuple[int, socket.socket]:
        """What a qremoted (or its master, with workers) does before serving: raise the
        descriptor limit, take the locks, listen. (lock, listening socket)."""
        self.room = raise_limit()
        if self.clients is None:
            self.clients = self.room.clients
        lock, listener = self._listen()
        if self.metrics is not None:
            try:
                self.metrics_socket = http.listen(self.metrics.ip, self.metrics.port)
            except OSError as e:
                self.stop_listening(lock, listener)
                raise StartError(f"metrics at {self.metrics.url}: {e.strerror}") from None
            self.log(f"metrics at {self.metrics.url}")
        if self.uid == 0:
            self.log("running as root: run it as qmailr, or the files it creates are root's")
        self.log(f"qremoted {os.getpid()} serving {self.home}/qremote/{SOCKET_NAME}")
        raised = self.room.raised_from
        self.log(
            f"descriptors: {self.room.soft} (hard limit {self.room.hard}"
            + (f", raised from {raised}" if raised is not None else "")
            + f"): {self.clients} clients at once, {min(self.deliveries, self.clients)} "
            "delivering" + (f", in each of {self.workers} workers" if self.workers > 1 else "")
        )
        return lock, listener

    def stop_listening(self, lock: int, listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            os.unlink(RELATIVE_PATH)
        listener.close()
        if self.metrics_socket is not None:
            self.metrics_socket.close()
        os.close(self._alive)
        os.close(lock)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """One process serving (``--workers 1``): start, serve until SIGTERM, stop. The
        signals wait (blocked) until the loop handles them, so a SIGTERM that comes as soon
        as "serving" is logged still stops it gracefully."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        lock, listener = self.start()
        try:
            await self.serve(listener, ready)
        finally:
            self.stop_listening(lock, listener)
            self.log(f"qremoted {os.getpid()} stopped after {self.done} deliveries")

    async def serve(self, listener: socket.socket, ready: asyncio.Event | None = None) -> None:
        """Accept and deliver until SIGTERM, then let those in flight finish (the grace).
        A worker also writes its status for its siblings and stops when its master dies."""
        assert self.clients is not None
        self.work = asyncio.Semaphore(min(self.deliveries, self.clients))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        # A worker starts with these blocked (its master's mask): only now that the loop
        # handles them may they arrive, so an early SIGTERM still stops it gracefully.
        signal.pthread_sigmask(
            signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
        )
        if self.worker is not None and self.siblings is not None:
            self.siblings.listen(self.worker, self._free_for_sibling)
            self.cache.ask_siblings = self.siblings.want
        accepting = loop.create_task(self._accept(listener))
        chores = loop.create_task(self._chores(stop)) if self.worker is not None else None
        serving = None
        if self.metrics_socket is not None:
            if self.worker is not None:
                predecessor = scrape.read(self.home, self.worker)  # a worker started again
                if predecessor is not None:
                    self.counts.merge(predecessor, gauges=False)
                    self._dns_base = dict(self.counts.values.get("dns_lookups", {}))
            serving = loop.create_task(self._serve_metrics(self.metrics_socket))
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            self.stopping = True
            accepting.cancel()
            if chores is not None:
                chores.cancel()
            if serving is not None:
                serving.cancel()
            if self.worker is not None:
                listener.close()  # the master keeps it for the other workers
            await self._finish_in_flight()
            await self.cache.close()

    async def _chores(self, stop: asyncio.Event) -> None:
        """A worker's: its status where its siblings read it (``qremote status`` lands on
        any of them), and a stop of its own when its master is gone."""
        master = os.getppid()
        worker = self.worker
        assert worker is not None  # chores are a worker's
        while True:
            if os.getppid() != master:
                self.log("worker: its master is gone; stopping")
                stop.set()
                return
            with contextlib.suppress(OSError):
                replace_unsynced(self._status_path(self.worker), self.status(True).encode())
            if self.metrics_socket is not None:
                scrape.write(self.home, worker, self.numbers())
            await asyncio.sleep(STATUS_EVERY)

    def _free_for_sibling(self, group: str) -> bool:
        """A sibling's delivery waits for a slot of ``group``: close one idle connection
        of the group, if this worker keeps one (its slot is freed once it is closed)."""
        return any(pool.evict_one(group) for pool in self._pools())

    def _status_path(self, worker: int | None) -> str:
        return os.path.join(self.home, "qremote", "workers", f"{worker}.status")

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
            while self.clients is not None and len(self.tasks) >= self.clients:
                # At the limit: the next client waits in the backlog (and then in
                # connect()) until one of ours is done.
                self.admitted.clear()
                await self.admitted.wait()
            conn = await accept(listener, self.log)
            task = loop.create_task(self._serve(conn))
            self.tasks.add(task)
            task.add_done_callback(self._client_done)

    def _client_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.admitted.set()

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
            async with asyncio.timeout(REQUEST_TIMEOUT):
                kind, payload = await read_request(conn, fds)
        except (TimeoutError, wire.WireError, OSError, ConnectionError) as e:
            self.log(f"dropped pid {pid}: {e.__class__.__name__}: {e}")
            return
        if kind == wire.STATUS:
            await self._send(conn, wire.frame(wire.TEXT, self.status().encode()))
        elif kind in (wire.DELIVER, wire.DELIVER_COMMITTED):
            committed = kind == wire.DELIVER_COMMITTED
            await self._deliver(conn, pid, wire.split_args(payload), fds, committed)
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

    async def _deliver(
        self, conn: socket.socket, pid: int, args: list[bytes], fds: list[int], committed: bool
    ) -> None:
        refusal = self._refusal(args, fds[:1])
        if refusal is not None:
            self.log(f"refused pid {pid}: {refusal}")
            await self._send(conn, wire.frame(wire.REFUSED, refusal.encode()))
            return
        host = args[0].decode("utf-8", "surrogateescape")
        sender = args[1].decode("utf-8", "replace")
        promise = f"{self.heartbeat:g}" + (f" {self.patience:g}" if committed else "")
        if not await self._send(conn, wire.frame(wire.ACCEPTED, promise.encode())):
            # The client gave up waiting and delivers it itself (see client._give_up).
            self.log(f"pid {pid} stopped waiting before the delivery began; not delivered here")
            return
        task = asyncio.current_task()
        assert task is not None  # a connection is always served by a task
        job = self.inflight[task] = InFlight(pid, host, sender, len(args) - 2)
        gate = (lambda: self._commit(conn, job)) if committed else None
        try:
            out = await self._beating(conn, job, self._outcome(host, args, fds, job, gate))
        except Abandoned as e:
            self.abandoned += 1
            self.counts.add("abandoned")
            seconds = time.monotonic() - job.started
            if self.json:
                line = record.abandoned(job.trace, pid, host, sender, str(e), seconds, self.worker)
            else:
                line = abandoned_line(pid, host, sender, str(e), seconds)
            self.log(line)
            return
        except asyncio.CancelledError:
            out = Outcome.final(report.STOPPED)
        except Exception as e:  # noqa: BLE001 - every failure must become a Z report
            out = Outcome.final(report.internal_error(f"{e.__class__.__name__}: {e}"))
        finally:
            del self.inflight[task]
        self.done += 1
        handed_back = await self._send(conn, job.owed + wire.frame(wire.REPORT, out.wire()))
        seconds = time.monotonic() - job.started
        self.counts.delivered(job.trace, out.message[:1].decode("ascii", "replace"), out.letters,
                              seconds)  # fmt: skip
        if self.json:
            report_text = one_line(out.message)
            line = record.delivery(
                job.trace, pid, host, sender, out.letters, report_text, seconds, handed_back,
                self.worker,
            )  # fmt: skip
        else:
            line = delivery_line(pid, host, sender, out, seconds, handed_back)
        self.log(line)

    async def _commit(self, conn: socket.socket, job: InFlight) -> None:
        """Just before the final dot: ask the client whether it still waits (``C``) and
        return only on its ``Y``; anything else (a closed socket, silence, nonsense) means
        it stopped waiting, and the delivery is abandoned without the dot."""
        loop = asyncio.get_running_loop()
        job.committing = True
        try:
            async with asyncio.timeout(COMMIT_ANSWER):
                data, job.owed = job.owed + wire.frame(wire.COMMIT, b"%g" % job.bound), b""
                await loop.sock_sendall(conn, data)
                reader = wire.FrameReader()
                while True:
                    chunk = await loop.sock_recv(conn, 64)
                    if not chunk:
                        raise Abandoned("its client stopped waiting")
                    frames = reader.feed(chunk)
                    if frames:
                        break
        except (TimeoutError, OSError, wire.WireError):
            raise Abandoned("its client did not say it was still waiting") from None
        finally:
            job.committing = False
        if frames[0][0] != wire.YES:
            raise Abandoned("its client answered the commit with something else")

    async def _beating(
        self, conn: socket.socket, job: InFlight, work: Awaitable[Outcome]
    ) -> Outcome:
        """Await ``work``, saying ``W`` to the client every ``heartbeat`` seconds meanwhile.

        The beat is a timer callback, not a task of its own: a delivery costs the loop
        nothing more until a beat is due. A heartbeat never waits for the client: what the
        socket does not take at once is left in ``job.owed`` for the report to carry ahead
        of it, so the stream never holds half a frame. Cancelled, the cancellation reaches
        ``work`` itself, so an SMTP session is aborted rather than left open.
        """
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle

        def beat() -> None:
            nonlocal timer
            timer = loop.call_later(self.heartbeat, beat)
            if job.committing:
                return  # the commit exchange owns the socket just now
            data = job.owed or wire.frame(wire.WORKING)
            try:
                job.owed = data[conn.send(data) :]
            except OSError:
                pass  # nothing went out: still owed, or a beat skipped

        timer = loop.call_later(self.heartbeat, beat)
        try:
            return await work
        finally:
            timer.cancel()

    async def _outcome(
        self,
        host: str,
        args: list[bytes],
        fds: list[int],
        job: InFlight,
        gate: BeforeDot | None,
    ) -> Outcome:
        assert self.work is not None
        async with self.work:  # our turn: only now is the message read
            job.delivering = True
            try:
                generation = self.cache.get()
            except ControlError as e:
                return Outcome.final(report.control_error(str(e)))
            try:
                message = read_queue_file(fds[0])
            except OSError:
                return Outcome.final(report.READ_ERROR)
            finally:
                while fds:  # the queue file is read: its descriptor is not needed again
                    with contextlib.suppress(OSError):
                        os.close(fds.pop())
            settings = generation.settings
            job.bound = settings.timeout_remote + self.patience
            return await deliver(
                settings, host, args[1], args[2:], message, generation.resources, gate, job.trace
            )

    # -- status --------------------------------------------------------------------------

    def status(self, own: bool = False) -> str:
        """What ``qremote status`` shows: this process, and with workers the others too
        (from what each last wrote, at most a few seconds old)."""
        text = self._own_status()
        if own or self.worker is None:
            return text
        parts = [f"worker {self.worker}: {text}"]
        for other in range(self.workers):
            if other == self.worker:
                continue
            path = self._status_path(other)
            try:
                fresh = time.time() - os.stat(path).st_mtime < 5 * STATUS_EVERY + 5
                with open(path) as f:
                    said = f.read() if fresh else "not answering\n"
            except OSError:
                said = "not started\n"
            parts.append(f"worker {other}: {said}")
        return "".join(parts)

    def _own_status(self) -> str:
        now = time.monotonic()
        jobs = [
            (job.pid, job.host, job.sender, job.recipients, now - job.started)
            for job in self.inflight.values()
        ]
        idle = [line for pool in self._pools() for line in pool.describe()]
        tls = self.cache.tally.lines()
        waiting = sum(not job.delivering for job in self.inflight.values())
        text = status_text(os.getpid(), now - self.started, self.done, jobs, idle, tls)
        head, _, rest = text.partition("\n")
        extra = f", {self.abandoned} abandoned" if self.abandoned else ""
        room = ""
        if self.room is not None and self.work is not None:
            room = (
                f"descriptors: {self.room.soft} (hard limit {self.room.hard}): room for "
                f"{self.clients} clients at once, {min(self.deliveries, self.clients or 0)} "
                "delivering\n"
            )
        groups = self.counts.group_lines()
        since = "".join(f"  {line}\n" for line in groups)
        if since:
            since = "deliveries per MX group since start:\n" + since
        where = ""
        if self.metrics is not None:
            where = f"metrics at {self.metrics.url}{' public' if self.metrics.public else ''}\n"
        return f"{head}{extra}; {waiting} waiting for their turn\n{room}{rest}{since}{where}"

    # -- metrics -------------------------------------------------------------------------

    def numbers(self) -> Counts:
        """This process's counts with the gauges of this moment: what a scrape shows."""
        c = self.counts
        jobs = self.inflight.values()
        c.set("in_flight", (), len(jobs))
        c.set("waiting", (), sum(not job.delivering for job in jobs))
        slots: dict[tuple[str, ...], float] = {}
        for job in jobs:
            if job.trace.slot in ("kept", "free", "waited"):
                key = (group_label(job.trace.group),)
                slots[key] = slots.get(key, 0) + 1
        idle: dict[tuple[str, ...], float] = {}
        for pool in self._pools():
            for group in pool.groups():
                key = (group_label(group),)
                idle[key] = idle.get(key, 0) + 1
                slots[key] = slots.get(key, 0) + 1
        c.values["slots_in_use"] = slots
        c.values["idle_connections"] = idle
        dns = dict(self._dns_base)
        for lookup, n in LOOKUPS.items():
            dns[lookup] = dns.get(lookup, 0) + n
        c.values["dns_lookups"] = dns
        if not self.worker:  # counted once, by the only process or by worker 0
            try:
                c.set("client_fallbacks", (), os.stat(wire.FALLBACKS_PATH).st_size)
            except OSError:
                c.set("client_fallbacks", (), 0)
        return c

    def _pools(self) -> list[ConnectionPool]:
        pools = list(self.cache.retired)
        if self.cache.current is not None and self.cache.current.resources.pool is not None:
            pools.append(self.cache.current.resources.pool)
        return pools

    def _page(self) -> bytes:
        # start-up: prometheus_client only in a qremoted that serves /metrics
        from qremote.metrics.exposition import render

        if self.worker is None:
            return render(self.numbers(), SERIES)
        scrape.write(self.home, self.worker, self.numbers())
        return render(scrape.summed(self.home, self.workers), SERIES)

    async def _serve_metrics(self, sock: socket.socket) -> None:
        from qremote.metrics.exposition import CONTENT_TYPE  # start-up: as above

        await http.serve(sock, self._page, CONTENT_TYPE)
