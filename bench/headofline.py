"""bench/headofline: what a rate limit on one group costs the rest of the queue, through
a real qmail (notqmail built from ``../shared/vendor/``, qremote installed with its
compiled client and qremoted, as README says).

N messages are queued while qmail-send is stopped: half to ``limited.example.net``,
half to ``free.example.net``, in turns, both routed by smtproutes to one loopback sink
(aiosmtpd, a process of its own, counting what arrives per domain). Then qmail-send
starts (``concurrencyremote`` C) and the clock runs until the free half has arrived.
Two contenders, each repeated R times, the queue emptied between runs:

- ``no limit``: control/shaping.toml limits nothing;
- ``limited``: ``["limited.example.net"] max_message_rate`` (default ``10/min``), with
  ``control/shapingwait`` at its default (5 s): the limited deliveries that can wait for
  their turn hold one of qmail-send's places meanwhile, the rest answer ``Z`` at once.

It prints the free half's drain time (median and runs) for both and their ratio: the
head-of-line effect of the limit. Run as root (qmail's users, setuid programs):

    python bench/headofline.py [-n 2000] [-c 20] [-r 3] [--rate 10/min]
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.realdrain import qremote  # noqa: E402
from qremote.daemon import client  # noqa: E402
from tests.support import realqmail, venv  # noqa: E402
from tests.support.smtpserver import ScriptedServer  # noqa: E402

MESSAGE = "From: Alice <alice@example.com>\nTo: {to}\nSubject: hol {n}\n\n" + "A line.\n" * 30


def sink(conn) -> None:
    """The SMTP server, counting arrivals per recipient domain."""
    with ScriptedServer() as server:
        conn.send(server.ip)
        while conn.recv() != "stop":
            counts: dict[str, int] = {}
            for r in list(server.received):
                domain = r.rcpt_tos[0].rsplit("@", 1)[-1]
                counts[domain] = counts.get(domain, 0) + 1
            conn.send(counts)


def clear_queue(home: str) -> None:
    """Every message out of the queue (qmail-send is stopped): a fresh start per run."""
    for part in ("mess", "info", "local", "remote", "todo", "intd", "bounce"):
        for path in glob.glob(os.path.join(home, "queue", part, "**", "*"), recursive=True):
            if os.path.isfile(path):
                os.unlink(path)


def one_run(home: str, n: int, conn) -> float:
    inject = os.path.join(home, "bin", "qmail-inject")
    for i in range(n):
        to = f"bob@{'limited' if i % 2 else 'free'}.example.net"
        subprocess.run(
            [inject, "-f", "alice@example.com", to],
            input=MESSAGE.format(to=to, n=i).encode(),
            check=True,
            env={"PATH": "/usr/bin:/bin"},
        )
    conn.send("count")
    before = conn.recv().get("free.example.net", 0)
    log = open(os.path.join(home, "send.log"), "wb")  # noqa: SIM115
    started = time.monotonic()
    send = realqmail.start_send(home, log)
    try:
        while True:
            conn.send("count")
            if conn.recv().get("free.example.net", 0) - before >= n // 2:
                return time.monotonic() - started
            if time.monotonic() - started > 900:
                raise RuntimeError("the free half did not drain in 15 minutes")
            time.sleep(0.01)
    finally:
        send.send_signal(signal.SIGTERM)
        send.wait(60)
        log.close()
        clear_queue(home)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000, help="messages per run (half limited)")
    ap.add_argument("-c", type=int, default=20, help="concurrencyremote")
    ap.add_argument("-r", type=int, default=3, help="runs per contender")
    ap.add_argument("--rate", default="10/min", help="the limited half's max_message_rate")
    args = ap.parse_args()
    reason = realqmail.missing_reason()
    if reason:
        sys.exit(f"bench/headofline: {reason}")
    top = realqmail.make_top()
    installed = venv.make()
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    server = ctx.Process(target=sink, args=(there,))
    server.start()
    daemon = None
    try:
        home = realqmail.build(top)
        control = os.path.join(home, "control")
        with open(os.path.join(control, "concurrencyremote"), "w") as f:
            f.write(f"{args.c}\n")
        ip = here.recv()
        with open(os.path.join(control, "smtproutes"), "w") as f:
            f.write(f"free.example.net:{ip}\nlimited.example.net:{ip}\n")
        qremote(installed, home, "install")
        qremote(installed, home, "keys", "new", "example.com", "--selector", "bench")
        service = os.path.join(home, "supervise-bench")
        qremote(installed, home, "install", "--service", service)
        daemon = subprocess.Popen(
            ["supervise", service], env={"PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while client.status(home) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("qremoted did not start")
            time.sleep(0.05)
        shaping = os.path.join(control, "shaping.toml")
        limited = f'["limited.example.net"]\nmax_message_rate = "{args.rate}"\n'
        times: dict[str, list[float]] = {"no limit": [], "limited": []}
        for _ in range(args.r):
            for name in times:
                with open(shaping, "w") as f:
                    f.write(limited if name == "limited" else '["default"]\n')
                for folder in glob.glob(os.path.join(home, "qremote", "shaping", "*")):
                    shutil.rmtree(folder, ignore_errors=True)  # each run starts unlimited
                time.sleep(0.2)  # qremoted sees control/ change
                times[name].append(one_run(home, args.n, here))
        print(f"{args.n} messages, half to a group limited to {args.rate}; concurrency {args.c}")
        for name, values in times.items():
            runs = ", ".join(f"{v:.1f}" for v in values)
            med = statistics.median(values)
            print(f"{name:9s} free half drained in {med:6.1f} s (runs: {runs})")
        ratio = statistics.median(times["limited"]) / statistics.median(times["no limit"])
        print(f"head-of-line effect: the free half takes {ratio:.2f}x as long beside the limit")
    finally:
        if daemon is not None:
            subprocess.run(["svc", "-dx", os.path.join(home, "supervise-bench")], check=False)
            daemon.wait(60)
        here.send("stop")
        server.join(30)
        shutil.rmtree(top, ignore_errors=True)
        venv.remove(installed)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/headofline: run as root (it builds and runs a real qmail)")
    main()
