"""bench/smtpd: a real qmail receiving signed mail over SMTP, with and without verification.

notqmail is built from ``../shared/vendor/`` (as the real-qmail test does), qremote is
installed into it from a virtualenv as README says, and notqmail's qmail-smtpd runs under
``tcpserver`` (ucspi-tcp) as qmaild. A loopback client sends N DKIM-signed 1 KB messages
over C connections at once (each connection: HELO, then MAIL/RCPT/DATA per message), the
key on a loopback DNS server. Contenders, interleaved, each repeated R times:

- ``plain``: qmail-smtpd hands the message to qmail-queue itself (no filter);
- ``in-process``: QMAILQUEUE is the Python filter (``bin/qremote-dkimverify.python``),
  verifying in the process qmail-smtpd starts for each message;
- ``thin+verifyd``: QMAILQUEUE is the compiled filter (``bin/qremote-dkimverify``) and the
  verifying daemon runs (``qremote verifyd --user qmaild``).

For each it prints messages/s (median and spread), the ratio to ``plain``, and CPU per
message: tcpserver's reaped children (qmail-smtpd, the filter, qmail-queue), the verifying
daemon, and the difference to ``plain``'s (the filter's cost). The client and the DNS
server run in this process and are not counted. Run as root (qmail's users, tcpserver -u):

    python bench/smtpd.py [-n 300] [-c 4] [-r 3] [--only thin+verifyd]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from bench.realdrain import daemon_cpu, stat  # noqa: E402
from qremote.verify import status  # noqa: E402
from tests.support import keys, realqmail, venv  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402
from tests.support.ports import wait_for_port  # noqa: E402

IP, PORT = "127.3.251.25", 25
BODY = "A line of a small message, as most mail is.\r\n" * 20
CONTENDERS = ("plain", "in-process", "thin+verifyd")


def messages(pem: bytes, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        message = (
            f"From: Alice <alice@example.com>\r\nTo: postmaster@me.example.org\r\n"
            f"Subject: incoming {i}\r\n\r\n{BODY}"
        ).encode()
        out.append(dkim.sign(message, b"s1", b"example.com", pem) + message)
    return out


def send_all(batch: list[bytes], connections: int) -> None:
    """The messages over ``connections`` SMTP sessions at once; fails on any refusal."""
    errors: list[BaseException] = []

    def one(part: list[bytes]) -> None:
        try:
            with smtplib.SMTP(IP, PORT, timeout=120) as smtp:
                for content in part:
                    if smtp.sendmail("alice@example.com", ["postmaster@me.example.org"], content):
                        raise RuntimeError("a recipient was refused")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=one, args=(batch[i::connections],)) for i in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"sending failed: {errors[0]!r}")


def one_run(home: str, name: str, batch: list[bytes], connections: int, daemon: int | None):
    qmaild = pwd.getpwnam("qmaild")
    env = ["env"]
    if name == "in-process":
        env.append(f"QMAILQUEUE={home}/bin/qremote-dkimverify.python")
    elif name == "thin+verifyd":
        env.append(f"QMAILQUEUE={home}/bin/qremote-dkimverify")
    log = open(os.path.join(home, "smtpd.log"), "ab")  # noqa: SIM115 - the server's
    server = subprocess.Popen(
        ["tcpserver", "-R", "-H", "-l", "me.example.org", "-c", "100",
         "-u", str(qmaild.pw_uid), "-g", str(qmaild.pw_gid), IP, str(PORT),
         *env, f"{home}/bin/qmail-smtpd"],
        env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    log.close()
    try:
        wait_for_port(IP, PORT, "qmail-smtpd")
        time.sleep(0.2)  # the probe's qmail-smtpd ends before the clock starts
        own0, children0, _ = stat(server.pid)
        d0 = daemon_cpu(daemon)
        started = time.monotonic()
        try:
            send_all(batch, connections)
        except RuntimeError as e:
            with open(os.path.join(home, "smtpd.log"), "rb") as f:
                said = f.read().decode("utf-8", "replace")[-1500:]
            raise RuntimeError(f"{name}: {e}; qmail-smtpd's log ends: {said}") from None
        elapsed = time.monotonic() - started
        time.sleep(0.3)  # the last sessions' processes are reaped
        own1, children1, _ = stat(server.pid)
        d1 = daemon_cpu(daemon)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    n = len(batch)
    return {
        "rate": n / elapsed,
        "smtpd": (children1 - children0 + own1 - own0) / n * 1000,
        "daemon": (d1 - d0) / n * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=300, help="messages per run")
    ap.add_argument("-c", type=int, default=4, help="SMTP connections at once")
    ap.add_argument("-r", type=int, default=3, help="runs of each contender")
    ap.add_argument("--only", help="comma-separated contenders (plain always runs)")
    args = ap.parse_args()
    names = [x for x in CONTENDERS if not args.only or x == "plain" or x in args.only.split(",")]
    reason = realqmail.missing_reason()
    if reason is not None:
        sys.exit(f"bench/smtpd: {reason}")
    top = realqmail.make_top()
    installed = None
    try:
        home = realqmail.build(top)
        installed = venv.make()
        with DnsServer() as dns:
            key = keys.write_key(os.path.join(top, "sender"), "example.com", "s1")
            keys.publish(dns.zone, "example.com", "s1", key)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            for name, text in (("nameservers", dns.address), ("rcpthosts", "me.example.org")):
                with open(os.path.join(home, "control", name), "w") as f:
                    f.write(text + "\n")
            service = os.path.join(home, "supervise", "qremote-verifyd")
            subprocess.run(
                [os.path.join(installed, "bin", "qremote"), "install", "--verifyd-service",
                 service],
                env={"QMAILHOME": home, "PATH": "/usr/bin:/bin"}, check=True, capture_output=True,
            )  # fmt: skip
            supervise = subprocess.Popen(
                ["supervise", service], env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 60
                while (said := status.ask(home)) is None:
                    if time.monotonic() > deadline:
                        sys.exit("bench/smtpd: verifyd did not start")
                    time.sleep(0.1)
                daemon = said.pid
                batch = messages(pem, args.n)
                results: dict[str, list[dict]] = {name: [] for name in names}
                for _ in range(args.r):
                    for name in names:
                        pid = daemon if name == "thin+verifyd" else None
                        results[name].append(one_run(home, name, batch, args.c, pid))
                print_table(results, args)
            finally:
                subprocess.run(["svc", "-dx", service], check=False)
                supervise.wait(60)
    finally:
        if installed is not None:
            shutil.rmtree(os.path.dirname(installed), ignore_errors=True)
        shutil.rmtree(top, ignore_errors=True)


def print_table(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    plain_rate = statistics.median(r["rate"] for r in results["plain"])
    plain_cpu = statistics.median(r["smtpd"] for r in results["plain"])
    print(
        f"{args.n} signed 1 KB messages over {args.c} SMTP connections to notqmail's "
        f"qmail-smtpd under tcpserver, {args.r} runs each, interleaved ({os.cpu_count()} cores)"
    )
    print(
        f"{'contender':<14} {'msgs/s':>8} {'spread':>13} {'vs plain':>9} "
        f"{'smtpd+filter':>13} {'verifyd':>8} {'filter cost':>12}   (CPU ms per message)"
    )
    for name, runs in results.items():
        rates = [r["rate"] for r in runs]
        rate = statistics.median(rates)
        smtpd = statistics.median(r["smtpd"] for r in runs)
        daemon = statistics.median(r["daemon"] for r in runs)
        print(
            f"{name:<14} {rate:8.1f} {min(rates):6.1f}-{max(rates):<6.1f} "
            f"{rate / plain_rate:8.2f}x {smtpd:13.2f} {daemon:8.2f} "
            f"{smtpd + daemon - plain_cpu:+12.2f}"
        )


if __name__ == "__main__":
    main()
