"""bench/scale: N deliveries in flight at once, notqmail's C qmail-remote against qremote.

N clients are started at once as qmail-rspawn starts them (argv, stdin a queue file,
cwd the qmail home, empty environment) for N different 1.8 KB messages (they differ in
their Message-ID, so no signature is made twice: qremoted keeps signatures for a message
signed again, qremote/signing/signatures.py), or with ``--one-message`` for one message to
N recipients (a mailing list's message, as qmail-send delivers it), to a loopback SMTP sink that
answers the final dot after ``--delay`` seconds (3 by default: a slow provider, so all N
are in flight together). The sink is a small asyncio server in a process of its own,
listening with a deep backlog, so that it is not what limits either contender; the
destination is an address literal, so no DNS is involved; ``control/mxgroups`` is
``*:100000`` so no cap queues anything.

Contenders, alternating, each R times per N:

- ``C``: notqmail's own qmail-remote, built from ``../shared/vendor/`` (no signing);
- ``qremote``: the compiled thin client with qremoted, which signs every message with
  DKIM and DomainKeys (two RSA-2048 signatures). qremoted runs with the descriptor limit
  its service files give (``LimitNOFILE``/``ulimit -n``: qremote.daemon.service.NOFILE)
  unless ``--nofile`` says otherwise (1024 shows what happens at the usual default).

For each it prints the wall time until every client has exited, the CPU per delivery
(the clients' own, reaped with wait4, plus qremoted's, whose share is shown beside
it), the memory (the peak of the
clients' and qremoted's proportional set sizes summed, sampled every half second: shared
library pages counted once), the reports (K, Z, D), how many messages
the sink received (exactly N, or a message went twice or not at all), and for qremote how
many deliveries went in-process instead of through qremoted. Medians, with the spread of
the R runs, and the ratios qremote / C. Run as root (it raises its own descriptor limit
for thousands of children):

    python bench/scale.py [-n 200 1000 2000 5000] [-r 3] [--delay 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qremote.daemon.service import NOFILE  # noqa: E402
from qremote.daemon.workers import default_count  # noqa: E402
from tests.support import qmailhome, realqmail  # noqa: E402
from tests.support.daemon import Qremoted  # noqa: E402
from tests.support.keys import write_key  # noqa: E402
from tests.support.smtpserver import fresh_ip  # noqa: E402

MESSAGE = (
    b"From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: scale\n"
    b"Message-ID: <scale-%05d@example.org>\n\n"
    + b"A line of a message of ordinary size here.\n" * 40
)
"""Numbered: each delivery its own message unless ``--one-message``."""
CLK = os.sysconf("SC_CLK_TCK")


# -- the sink ----------------------------------------------------------------------------------


async def _session(reader, writer, delay: float, counter: list[int]) -> None:
    writer.write(b"220 sink ESMTP\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                await writer.drain()
                while (await reader.readline()) not in (b".\r\n", b""):
                    pass
                await asyncio.sleep(delay)
                counter[0] += 1
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
    except (ConnectionError, OSError, asyncio.CancelledError):
        return  # the client went, or the sink is closing
    finally:
        writer.close()


def sink(conn, ip: str, delay: float) -> None:
    """The SMTP sink, in a process of its own, counting the messages it accepted."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    counter = [0]

    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _session(r, w, delay, counter), ip, 25, backlog=65535
        )
        loop = asyncio.get_running_loop()
        conn.send("ready")
        while True:
            ask = await loop.run_in_executor(None, conn.recv)
            if ask == "stop":
                break
            conn.send(counter[0])
            counter[0] = 0
        server.close()

    asyncio.run(main())


# -- one run -------------------------------------------------------------------------------


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def _family(pid: int) -> list[int]:
    """qremoted and its workers (the master's children)."""
    found = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _rss_kb(pid: int) -> int:
    """The process's proportional set size (its share of shared pages), in KB."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


class Sampler(threading.Thread):
    """The peak of the summed resident memory of the clients (and qremoted), sampled
    every half second: what the machine must hold at once."""

    def __init__(self, extra: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids: list[int] = []
        self.extra = extra
        self.peak = 0
        self.peak_extra = 0
        """qremoted's share of the peak (its processes' sizes when the sum peaked)."""
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            extra = sum(_rss_kb(p) for p in self.extra)
            total = extra + sum(_rss_kb(p) for p in self.pids)
            if total > self.peak:
                self.peak, self.peak_extra = total, extra


def burst(program: str, home: str, ip: str, n: int, queues: list[str], extra: list[int]) -> dict:
    """Start n clients at once (the i-th reads ``queues[i % len(queues)]``), reap them
    all: wall time, CPU, memory, reports."""
    procs = []
    sampler = Sampler(extra)
    sampler.start()
    started = time.monotonic()
    for i in range(n):
        with open(queues[i % len(queues)], "rb") as stdin:
            procs.append(
                subprocess.Popen(
                    [program, f"[{ip}]", "alice@example.org", f"bob{i}@example.net"],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=home,
                    env={},
                )
            )
        sampler.pids.append(procs[-1].pid)
    letters: dict[str, int] = {}
    cpu = 0.0
    for proc in procs:
        out = proc.stdout.read()
        proc.stdout.close()
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        cpu += usage.ru_utime + usage.ru_stime
        final = out.split(b"\0")[-2][:1].decode() if out.count(b"\0") else "?"
        letters[final] = letters.get(final, 0) + 1
    wall = time.monotonic() - started
    sampler.done.set()
    sampler.join()
    return {
        "wall": wall,
        "cpu": cpu,
        "rss_kb": sampler.peak,
        "daemon_kb": sampler.peak_extra,
        "letters": letters,
    }


def run_c(top_c: str, ip: str, n: int, queues: list[str], conn) -> dict:
    result = burst(os.path.join(top_c, "qmail-remote"), top_c, ip, n, queues, [])
    conn.send("count")
    result["received"] = conn.recv()
    result["fallbacks"] = 0
    return result


def run_qremote(
    home, ip: str, n: int, queues: list[str], warm: str, conn, nofile: int, workers: int
) -> dict:
    with Qremoted(home, "--workers", str(workers), nofile=(nofile, nofile)) as daemon:
        burst(home.program, home.path, ip, 5, [warm], [])  # warm: keys, contexts
        conn.send("count")
        conn.recv()
        pids = _family(daemon.proc.pid)
        before = sum(_cpu(p) for p in pids)
        lines = daemon.log().count("delivery pid")
        result = burst(home.program, home.path, ip, n, queues, pids)
        result["daemon_cpu"] = sum(_cpu(p) for p in pids) - before
        result["cpu"] += result["daemon_cpu"]
        result["fallbacks"] = n - (daemon.log().count("delivery pid") - lines)
    conn.send("count")
    result["received"] = conn.recv()
    return result


# -- the report ----------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.2f} ({min(values):.2f}-{max(values):.2f})"


def show(name: str, n: int, runs: list[dict]) -> dict[str, float]:
    wall = [r["wall"] for r in runs]
    cpu = [r["cpu"] / n * 1000 for r in runs]
    mem = [r["rss_kb"] / 1024 for r in runs]
    daemon_mem = statistics.median(r["daemon_kb"] / 1024 for r in runs)
    daemon_cpu = statistics.median(r.get("daemon_cpu", 0) / n * 1000 for r in runs)
    letters: dict[str, int] = {}
    for r in runs:
        for k, v in r["letters"].items():
            letters[k] = letters.get(k, 0) + v
    said = ", ".join(f"{v} {k}" for k, v in sorted(letters.items()))
    received = [r["received"] for r in runs]
    fallbacks = sum(r["fallbacks"] for r in runs)
    print(
        f"  {name:8} wall {spread(wall)} s   CPU/delivery {spread(cpu)} ms"
        + (f" (qremoted {daemon_cpu:.2f})" if daemon_cpu else "")
        + "   "
        f"memory {spread(mem)} MB"
        + (f" (qremoted {daemon_mem:.1f})" if daemon_mem else "")
        + f"   reports: {said}   received {received} "
        f"(of {n} each)   fallbacks {fallbacks}"
    )
    return {
        "wall": statistics.median(wall),
        "cpu": statistics.median(cpu),
        "mem": statistics.median(mem),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, nargs="+", default=[200, 1000, 2000, 5000])
    ap.add_argument("-r", type=int, default=3, help="runs of each contender per N")
    ap.add_argument("--delay", type=float, default=3.0, help="seconds before the dot's 250")
    ap.add_argument("--nofile", type=int, default=NOFILE, help="qremoted's descriptor limit")
    ap.add_argument(
        "--workers", type=int, default=default_count(), help="qremoted's workers (default: cores)"
    )
    ap.add_argument(
        "--one-message",
        action="store_true",
        help="one message to N recipients (a list's) instead of N different messages",
    )
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.nofile = min(args.nofile, hard)  # what a service manager could give it here
    ip = fresh_ip()
    here, there = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=sink, args=(there, ip, args.delay)
    )
    server.start()
    here.recv()
    with tempfile.TemporaryDirectory() as top:
        home_c = realqmail.build_programs(os.path.join(top, "c"), "qmail-remote")
        with open(os.path.join(home_c, "control", "timeoutremote"), "w") as f:
            f.write("1200\n")
        home = qmailhome.make(os.path.join(top, "qremote"), "127.0.0.1:9")
        qmailhome.use_compiled_client(home, sanitized=False)
        write_key(home.control, "example.org", "scale")
        home.write("mxgroups", "*:100000\n")
        home.write("timeoutremote", "1200\n")
        queues = []
        for i in range(1 if args.one_message else max(args.n)):
            queues.append(os.path.join(top, f"queue-{i}"))
            with open(queues[-1], "wb") as f:
                f.write(MESSAGE % i)
        warm = os.path.join(top, "queue-warm")  # signed before the clock starts
        with open(warm, "wb") as f:
            f.write(MESSAGE % 99999)
        kind = "one message to N recipients" if args.one_message else "N different messages"
        print(
            f"{kind} of {len(MESSAGE % 0)} bytes, the sink answers the dot after {args.delay:g} s; "
            f"qremoted's descriptor limit {args.nofile}, {args.workers} workers; "
            f"medians (min-max) of {args.r} runs"
        )
        for n in args.n:
            c_runs, q_runs = [], []
            for _ in range(args.r):
                c_runs.append(run_c(home_c, ip, n, queues, here))
                q_runs.append(
                    run_qremote(home, ip, n, queues, warm, here, args.nofile, args.workers)
                )
            print(f"N = {n} in flight")
            c = show("C", n, c_runs)
            q = show("qremote", n, q_runs)
            print(
                f"  qremote / C: wall {q['wall'] / c['wall']:.2f}x, CPU per delivery "
                f"{q['cpu'] / c['cpu']:.2f}x, memory {q['mem'] / c['mem']:.2f}x"
            )
    here.send("stop")
    server.join()


if __name__ == "__main__":
    main()
