"""bench/drain: draining a queue through the thin qmail-remote with qremoted, against the
standalone (in-process) path, in the same run.

N deliveries at concurrency C (as qmail-send with concurrencyremote C would start them:
stdin a file, empty environment, cwd the qmail home) of a small signed message to an
aiosmtpd server on loopback (in a process of its own), found through MX lookup on a
loopback DNS server. Each delivery sends a message of its own (numbered Subject), so no
signature is made twice; ``--one-message`` sends one message to every recipient instead,
as qmail-send delivers a mailing list's message (qremoted then answers repeats from the
signatures it keeps: qremote/signing/signatures.py). For each
path it prints messages/s and the median CPU (user+sys) of one qmail-remote process, and
for the daemon path also the daemon's CPU per delivery; then the bare interpreter's start
(``python -c pass`` and ``python -IS -c pass``) for scale, and the ratios the issue asks for:

    python bench/drain.py [-n 200] [-c 8]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import qmailhome  # noqa: E402
from tests.support.daemon import Qremoted  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402
from tests.support.keys import dkim_record, txt_strings, write_key  # noqa: E402
from tests.support.smtpserver import ScriptedServer, fresh_ip  # noqa: E402

MESSAGE = b"From: a@example.org\nTo: b@mx.test\nSubject: bench %d\n\n" + b"hello\n" * 50
ONE_MESSAGE = False
"""Every delivery the same message (``--one-message``) rather than each its own."""
_numbers = itertools.count()


def one(argv: list[str], stdin_data: bytes, cwd: str) -> tuple[float, bytes]:
    """Run one process as qmail-rspawn does; its own CPU seconds (wait4) and output."""
    with tempfile.TemporaryFile() as stdin:
        stdin.write(stdin_data)
        stdin.seek(0)
        proc = subprocess.Popen(
            argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env={}
        )
        out = proc.stdout.read()
        proc.stdout.close()
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
    return usage.ru_utime + usage.ru_stime, out


def drain(argv: list[str], home: str, n: int, concurrency: int) -> tuple[float, list[float]]:
    """n deliveries, ``concurrency`` at a time: (messages per second, CPU per process)."""
    cpus: list[float] = []
    failures: list[bytes] = []
    left = iter(range(n))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
                number = 0 if ONE_MESSAGE else next(_numbers) + 1
            cpu, out = one(argv, MESSAGE % number, home)
            with lock:
                cpus.append(cpu)
                if not out.startswith(b"r\0K"):
                    failures.append(out)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} deliveries failed, e.g. {failures[0][:300]!r}")
    return n / elapsed, cpus


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(conn, record: str) -> None:
    """The SMTP and DNS servers, in a process of their own: sharing the benchmark's GIL
    with its worker threads would make the server, not qmail-remote, the bottleneck."""
    with ScriptedServer() as mx, DnsServer() as dns:
        dns.zone.mx("mx.test", (10, "mx1.mx.test"))
        dns.zone.a("mx1.mx.test", mx.ip)
        dns.zone.add("bench._domainkey.example.org", "TXT", record)
        conn.send(dns.address)
        conn.recv()  # until the benchmark is done
        conn.send(len(mx.received))


def scrape(where: str, done: threading.Event) -> None:
    """What a Prometheus server does to qremoted: one scrape a second."""
    while not done.wait(1.0):
        with urllib.request.urlopen(f"http://{where}/metrics", timeout=10) as answer:
            answer.read()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("-c", type=int, default=8, help="concurrent deliveries")
    ap.add_argument(
        "--metrics",
        action="store_true",
        help="qremoted with /metrics and JSON records, scraped every second meanwhile",
    )
    ap.add_argument(
        "--one-message",
        action="store_true",
        help="one message to every recipient (a list's) instead of one message per delivery",
    )
    args = ap.parse_args()
    global ONE_MESSAGE
    ONE_MESSAGE = args.one_message
    with tempfile.TemporaryDirectory() as top:
        home = qmailhome.make(os.path.join(top, "qmail"), "127.0.0.1:9")
        key = write_key(home.control, "example.org", "bench")
        here, there = multiprocessing.get_context("spawn").Pipe()
        server = multiprocessing.get_context("spawn").Process(
            target=serve, args=(there, txt_strings(dkim_record(key)))
        )
        server.start()
        home.write("nameservers", here.recv() + "\n")
        argv = [home.program, "mx.test", "a@example.org", "b@mx.test"]
        standalone = [home.program + "-standalone", *argv[1:]]
        home.deliver_standalone("mx.test", "a@example.org", ["b@mx.test"], MESSAGE % -1)
        bare = [one([sys.executable, "-c", "pass"], b"", top)[0] for _ in range(30)]
        bare_is = [one([sys.executable, "-IS", "-c", "pass"], b"", top)[0] for _ in range(30)]
        s_rate, s_cpu = drain(standalone, home.path, args.n, args.c)
        where = f"{fresh_ip()}:9716"
        extra = ["--metrics", where, "--log-format", "json"] if args.metrics else []
        with Qremoted(home, *extra) as daemon:
            drain(argv, home.path, min(args.n, 20), args.c)  # warm: keys, DNS, connections
            before = proc_cpu(daemon.proc.pid)
            scraping = threading.Event()
            scraper = threading.Thread(target=scrape, args=(where, scraping))
            if args.metrics:
                scraper.start()
            d_rate, d_cpu = drain(argv, home.path, args.n, args.c)
            daemon_cpu = (proc_cpu(daemon.proc.pid) - before) / args.n
            scraping.set()
            if args.metrics:
                scraper.join()
            reused = daemon.log().count("Reused the connection")
        here.send("done")
        received = here.recv()
        server.join()
    ms = 1000
    b, bi = statistics.median(bare), statistics.median(bare_is)
    print(
        f"{args.n} deliveries at concurrency {args.c}, {received} received, "
        + ("one message to every recipient" if args.one_message else "each its own message")
        + (", qremoted with /metrics scraped every second and JSON records" if args.metrics else "")
    )
    s_med, d_med = statistics.median(s_cpu) * ms, statistics.median(d_cpu) * ms
    print(f"standalone:        {s_rate:7.1f} msg/s, CPU per qmail-remote {s_med:6.1f} ms")
    print(
        f"thin + qremoted:   {d_rate:7.1f} msg/s, CPU per qmail-remote {d_med:6.1f} ms"
        f", qremoted {daemon_cpu * ms:.1f} ms per delivery, {reused} reused connections"
    )
    print(f"bare interpreter:  python -c pass {b * ms:.1f} ms, python -IS -c pass {bi * ms:.1f} ms")
    print(f"throughput ratio (daemon / standalone): {d_rate / s_rate:.1f}x  (target 10x)")
    print(f"client CPU ratio (thin client / python -c pass): {statistics.median(d_cpu) / b:.2f}x"
          f"  (/ python -IS: {statistics.median(d_cpu) / bi:.2f}x; target within 2x)")  # fmt: skip


if __name__ == "__main__":
    main()
