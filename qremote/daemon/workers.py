"""qremoted on every core: a master and worker processes (``--workers N``; the default 0
is one per core, 1 a single process).

The master does what must be done once: the descriptor limit, the locks (the alive lock
that clients look at), the listening socket, the channels between the workers. Each
worker is a whole qremoted serving that one socket: the kernel hands each new client to
one of the workers waiting in accept, so deliveries spread over them. What must be shared
already is, through files every qremote process on the host uses: MX-group slots
(``groups/``), tcpto, remembered MTA-STS policies, keys and control files (each worker
notices changes itself, and SIGHUP is passed on). What each keeps for itself: its DNS
cache, its TLS sessions and its kept SMTP connections, so with N workers a kept connection
is found again by the next delivery to the same MX only when that lands on the same
worker (about one in N at first; each worker then keeps its own).

An idle kept connection holds its MX-group slot, and only the worker that kept it can
close it; a delivery that finds its group full with no idle connection of its own there
asks its siblings to close one of theirs (:mod:`qremote.daemon.siblings`). Without that a
second worker waited for slots the first one's idle connections held: bench/realdrain.py
on a 2-core machine gave 0.42x the C client's throughput with two workers against 0.75x
with one process; with it, 0.73x against 0.75x (the same within the runs' spread).

A worker that dies is started again at once. Its clients lose nothing: one that had not
said ``Y`` (the commit) finds the daemon still running (the master holds the alive lock)
and sends its request again, to another worker; one that had may have had its message
sent, and reports ``Z`` (at worst twice, as for a killed daemon). SIGTERM goes to every
worker, each finishes its deliveries within the grace, and the master leaves last.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal

from qremote.daemon import scrape
from qremote.daemon.server import Daemon
from qremote.daemon.siblings import Siblings

SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


def default_count() -> int:
    """One worker per core this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except OSError:
        return max(os.cpu_count() or 1, 1)


def run(daemon: Daemon) -> None:
    """The master: start, fork the workers, keep them running until SIGTERM."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    lock, listener = daemon.start()
    os.makedirs(os.path.join(daemon.home, "qremote", "workers"), mode=0o700, exist_ok=True)
    scrape.forget(daemon.home)
    daemon.siblings = Siblings(daemon.workers)
    children: dict[int, int] = {}

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            _worker(daemon, index, listener)  # never returns
        children[pid] = index

    # What the master built (modules, settings) is shared with the workers until written:
    # frozen, the collector never writes to it, so the workers' collections leave it shared.
    gc.freeze()
    for index in range(daemon.workers):
        spawn(index)
    daemon.log(f"{daemon.workers} workers: {', '.join(str(p) for p in children)}")
    stopping = False
    while children:
        number = signal.sigwait(SIGNALS)
        if number == signal.SIGHUP:
            daemon.log("SIGHUP: passed on to the workers")
            _tell(children, signal.SIGHUP)
        elif number in (signal.SIGTERM, signal.SIGINT) and not stopping:
            stopping = True
            daemon.log(f"stopping: {len(children)} workers finish their deliveries")
            _tell(children, signal.SIGTERM)
        elif number == signal.SIGCHLD:
            for pid, status in _reaped():
                if pid not in children:
                    continue
                index = children.pop(pid)
                if stopping:
                    continue
                daemon.log(f"worker {index} (pid {pid}) ended ({_how(status)}); starting it again")
                spawn(index)
    daemon.stop_listening(lock, listener)
    daemon.log(f"qremoted {os.getpid()} stopped")


def _worker(daemon: Daemon, index: int, listener) -> None:
    """In the child: serve until told to stop; exit without running the master's code."""
    code = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        daemon.worker = index  # the signals stay blocked until its loop handles them
        asyncio.run(daemon.serve(listener))
        daemon.log(f"qremoted worker {os.getpid()} stopped after {daemon.done} deliveries")
    except BaseException as e:  # noqa: BLE001 - say why, then go: the master starts another
        daemon.log(f"worker failed: {e.__class__.__name__}: {e}")
        code = 1
    finally:
        os._exit(code)


def _tell(children: dict[int, int], number: int) -> None:
    for pid in children:
        try:
            os.kill(pid, number)
        except ProcessLookupError:
            pass


def _reaped() -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        found.append((pid, status))


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit {os.waitstatus_to_exitcode(status)}"
