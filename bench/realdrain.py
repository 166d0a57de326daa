"""bench/realdrain: a real qmail draining its queue, the C qmail-remote against qremote's.

notqmail is built from ``../shared/vendor/`` (as the real-qmail test does), qremote is
installed into it from a virtualenv as README says, and for each contender the same N
messages are queued with qmail-inject while qmail-send is stopped; then qmail-send starts
(``concurrencyremote`` C) and the clock runs until the loopback sink (aiosmtpd, in a
process of its own, reached through smtproutes) has them all and qmail-send has logged
every success. Contenders, in one run, each repeated R times:

- ``c-unsigned``: notqmail's own C qmail-remote (no signing, no TLS);
- ``standalone``: qremote's Python client, no qremoted (every delivery in-process);
- ``python+daemon``: the Python thin client with qremoted;
- ``compiled+daemon``: the compiled thin client with qremoted;
- ``compiled+daemon+tls``: the same with STARTTLS at the sink (the C client in notqmail
  has no TLS, so there is no C figure beside it).

Each message has its own number, so no signature is made twice; ``--recipients K`` queues
N/K messages of K recipients each instead (a mailing list's message is one queue file
that qmail-send delivers once per recipient: qremoted answers a repeat from the
signatures it keeps, qremote/signing/signatures.py).

qremote's contenders sign every message with DKIM (RSA-2048) and DomainKeys. For each it
prints messages/s (median), the ratio to the C client, and CPU per delivery split into the
client processes (qmail-rspawn's reaped children), qremoted, qmail-send with
qmail-rspawn, and the sink (the same for every contender: it bounds them all alike).
Run as root (qmail's users, setuid programs):

    python bench/realdrain.py [-n 1000] [-c 20] [-r 3] [--recipients 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qremote.daemon import client  # noqa: E402
from tests.support import certs, realqmail, venv  # noqa: E402
from tests.support.smtpserver import ScriptedServer  # noqa: E402

MESSAGE = (
    "From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: drain {n}\n\n"
    + "A line of a small message, as most mail is.\n" * 30
)
CLK = os.sysconf("SC_CLK_TCK")
WORKERS: int | None = None
"""qremoted's --workers (None: its default, one per core)."""
RECIPIENTS = 1
"""Recipients of each queued message (``--recipients``): deliveries per queue file."""


def sink(conn, tls_dir: str | None) -> None:
    """The SMTP server, in a process of its own, counting what arrives."""
    tls = None
    if tls_dir is not None:
        tls = certs.server_context(*certs.self_signed("sink.example.net"), tls_dir)
    with ScriptedServer(tls_context=tls) as server:
        conn.send(server.ip)
        while True:
            if conn.recv() == "stop":
                break
            conn.send(len(server.received))


def stat(pid: int) -> tuple[float, float, int]:
    """(own CPU, reaped children's CPU) in seconds and the parent pid of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / CLK
    children = (int(fields[13]) + int(fields[14])) / CLK
    return own, children, int(fields[1])


def daemon_cpu(pid: int | None) -> float:
    """CPU seconds of qremoted: the process supervise started and its workers."""
    if pid is None:
        return 0.0
    total = stat(pid)[0]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                own, _, parent = stat(int(entry))
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid:
                total += own
    return total


def child_named(parent: int, name: str) -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
            if comm == name and stat(int(entry))[2] == parent:
                return int(entry)
        except OSError:
            continue
    raise RuntimeError(f"no {name} under {parent}")


def qremote(installed: str, home: str, *args: str) -> None:
    subprocess.run(
        [os.path.join(installed, "bin", "qremote"), *args],
        env={"QMAILHOME": home, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )


def one_run(home: str, n: int, conn, daemon_pid: int | None, sink_pid: int) -> dict:
    """Queue n deliveries (n / RECIPIENTS messages, at least one), start qmail-send, time
    the drain; CPU figures per delivery."""
    inject = os.path.join(home, "bin", "qmail-inject")
    each = min(RECIPIENTS, n)
    n -= n % each
    recipients = [f"bob{k}@example.net" for k in range(each)]
    for i in range(n // each):
        subprocess.run(
            [inject, "-f", "alice@example.com", *recipients],
            input=MESSAGE.format(n=i).encode(),
            check=True,
            env={"PATH": "/usr/bin:/bin"},
        )
    conn.send("count")
    before = conn.recv()
    log_path = os.path.join(home, "send.log")
    log = open(log_path, "wb")  # noqa: SIM115
    d0 = daemon_cpu(daemon_pid)
    s0 = stat(sink_pid)[0]
    started = time.monotonic()
    send = realqmail.start_send(home, log)
    rspawn = None
    deadline = started + 600
    while True:
        if rspawn is None:
            try:
                rspawn = child_named(send.pid, "qmail-rspawn")
            except RuntimeError:
                pass
        conn.send("count")
        got = conn.recv() - before
        with open(log_path, "rb") as f:
            done = f.read().count(b" success: ")
        if got >= n and done >= n:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"drain stuck at {got}/{n} received, {done} logged")
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    send_own, _, _ = stat(send.pid)
    r_own, r_children, _ = stat(rspawn) if rspawn else (0.0, 0.0, 0)
    d1 = daemon_cpu(daemon_pid)
    s1 = stat(sink_pid)[0]
    send.send_signal(signal.SIGTERM)
    send.wait(60)
    log.close()
    with open(log_path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    failures = [line for line in text.splitlines() if " deferral: " in line or " failure: " in line]
    if failures:
        raise RuntimeError(f"not every delivery succeeded: {failures[:3]}")
    os.unlink(log_path)
    return {
        "rate": n / elapsed,
        "clients": r_children / n * 1000,
        "daemon": (d1 - d0) / n * 1000,
        "qmail": (send_own + r_own) / n * 1000,
        "sink": (s1 - s0) / n * 1000,
    }


def contender(
    name: str, home: str, installed: str, n: int, runs: int, conn, sink_pid: int
) -> list[dict]:
    bin_dir = os.path.join(home, "bin")
    if name == "c-unsigned":
        if os.path.exists(os.path.join(bin_dir, "qmail-remote.orig")):
            qremote(installed, home, "uninstall")
    which = ["--python-client"] if name in ("standalone", "python+daemon") else []
    if name != "c-unsigned":
        qremote(installed, home, "install", *which)
    daemon = None
    if name.endswith("daemon") or name.endswith("tls"):
        service = os.path.join(home, "supervise-bench")
        qremote(installed, home, "install", *which, "--service", service)
        if WORKERS is not None:  # the run script with --workers, as an administrator would
            run = os.path.join(service, "run")
            with open(run) as f:
                text = f.read().replace(" daemon\n", f" daemon --workers {WORKERS}\n")
            with open(run, "w") as f:
                f.write(text)
        daemon = subprocess.Popen(
            ["supervise", service],
            env={"PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while client.status(home) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("qremoted did not start")
            time.sleep(0.05)
    try:
        daemon_pid = child_named(daemon.pid, "python3") if daemon else None
        one_run(home, min(n, 50), conn, daemon_pid, sink_pid)  # warm: keys, connections
        return [one_run(home, n, conn, daemon_pid, sink_pid) for _ in range(runs)]
    finally:
        if daemon is not None:
            subprocess.run(["svc", "-dx", os.path.join(home, "supervise-bench")], check=False)
            daemon.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000, help="messages per run")
    ap.add_argument("-c", type=int, default=20, help="concurrencyremote")
    ap.add_argument("-r", type=int, default=3, help="runs per contender")
    ap.add_argument("--only", help="comma-separated contenders")
    ap.add_argument("--workers", type=int, help="qremoted's --workers (default: one per core)")
    ap.add_argument(
        "--recipients", type=int, default=1, help="recipients per message (a list's: many)"
    )
    args = ap.parse_args()
    global WORKERS, RECIPIENTS
    WORKERS = args.workers
    RECIPIENTS = max(1, min(args.recipients, args.n))
    reason = realqmail.missing_reason()
    if reason:
        sys.exit(f"bench/realdrain: {reason}")
    top = realqmail.make_top()
    installed = venv.make()
    ctx = multiprocessing.get_context("spawn")
    names = ["c-unsigned", "standalone", "python+daemon", "compiled+daemon", "compiled+daemon+tls"]
    if args.only:
        names = [x for x in names if x in args.only.split(",")]
    results: dict[str, list[dict]] = {}
    try:
        home = realqmail.build(top)
        with open(os.path.join(home, "control", "concurrencyremote"), "w") as f:
            f.write(f"{args.c}\n")
        qremote(installed, home, "install")
        qremote(installed, home, "keys", "new", "example.com", "--selector", "bench")
        for name in names:
            here, there = ctx.Pipe()
            tls_dir = os.path.join(top, "tls") if name.endswith("tls") else None
            server = ctx.Process(target=sink, args=(there, tls_dir))
            server.start()
            ip = here.recv()
            with open(os.path.join(home, "control", "smtproutes"), "w") as f:
                f.write(f"example.net:{ip}\n")
            try:
                results[name] = contender(
                    name, home, installed, args.n, args.r, here, server.pid
                )
            finally:
                here.send("stop")
                server.join(30)
            print_one(name, results, args)
    finally:
        shutil.rmtree(top, ignore_errors=True)
        venv.remove(installed)


def print_one(name: str, results: dict[str, list[dict]], args) -> None:
    runs = results[name]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    rates = ", ".join(f"{r['rate']:.0f}" for r in runs)
    line = f"{name:22} {med['rate']:7.1f} msg/s (runs: {rates})"
    if "c-unsigned" in results and name != "c-unsigned":
        base = statistics.median(r["rate"] for r in results["c-unsigned"])
        line += f"  {med['rate'] / base:.2f}x the C client"
    line += (
        f"\n{'':22} CPU per delivery: clients {med['clients']:.2f} ms, qremoted "
        f"{med['daemon']:.2f} ms, qmail-send+rspawn {med['qmail']:.2f} ms, "
        f"the sink {med['sink']:.2f} ms"
    )
    if name.endswith("tls"):
        line += "  (STARTTLS; notqmail's C client has no TLS to compare with)"
    print(line, flush=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/realdrain: run as root (it builds and runs a real qmail)")
    main()
