"""bench/dane: what DANE costs a delivery, against opportunistic TLS to the same server,
in the same run.

Two domains on one aiosmtpd MX (in a process of its own) with STARTTLS: ``d.dane.test``,
DNSSEC-signed with a TLSA 3 1 1 record (knotd signs, unbound validates, both on
loopback), and ``insecure.test``, unsigned (opportunistic TLS, certificate not checked).
N deliveries to each through qremoted at concurrency C, twice: with kept connections
(the TLSA answer cached by its TTL, the match done once per connection) and with a new
connection each time (``reuseidle 0``: a TLS handshake, resumed, per delivery). It prints
messages/s and qremoted's CPU per delivery for both, and the ratios:

    python bench/dane.py [-n 200] [-c 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from drain import drain, proc_cpu  # noqa: E402

from tests.support import certs, qmailhome  # noqa: E402
from tests.support.daemon import Qremoted  # noqa: E402
from tests.support.dnssec import RESOLVER, Dnssec  # noqa: E402
from tests.support.smtpserver import ScriptedServer, fresh_ip  # noqa: E402

MESSAGE = b"From: a@example.org\nTo: b@mx.test\nSubject: bench\n\n" + b"hello\n" * 50


def serve(conn, ip: str, cert: bytes, key: bytes, folder: str) -> None:
    tls = certs.server_context(cert, key, folder)
    with ScriptedServer(ip=ip, tls_context=tls) as mx:
        conn.send("ready")
        conn.recv()
        conn.send(len(mx.received))


def spki_sha256(pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    public = x509.load_pem_x509_certificate(pem).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def run(home, domain: str, n: int, c: int) -> tuple[float, float, str]:
    argv = [home.program, domain, "a@example.org", f"b@{domain}"]
    with Qremoted(home) as daemon:
        drain(argv, home.path, min(n, 20), c)  # warm: DNS, sessions, connections
        before = proc_cpu(daemon.proc.pid)
        rate, _ = drain(argv, home.path, n, c)
        cpu = (proc_cpu(daemon.proc.pid) - before) / n
        log = daemon.log()
    return rate, cpu, log


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("-c", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3, help="runs per case; medians are shown")
    args = ap.parse_args()
    ip = fresh_ip()
    ca = certs.Authority.create()
    cert, key = ca.issue("mx.dane.test")
    zones = (
        f"mx A {ip}\nd MX 10 mx\n_25._tcp.mx TLSA 3 1 1 {spki_sha256(cert)}\n",
        f"mx A {ip}\n@ MX 10 mx\n",
        "",
    )
    with tempfile.TemporaryDirectory() as top, Dnssec(*zones):
        here, there = multiprocessing.get_context("spawn").Pipe()
        server = multiprocessing.get_context("spawn").Process(
            target=serve, args=(there, ip, cert, key, os.path.join(top, "tls"))
        )
        server.start()
        here.recv()
        home = qmailhome.make(os.path.join(top, "qmail"), f"{RESOLVER}:53")
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for reuse in ("kept", "new"):
            home.write("reuseidle", "5\n" if reuse == "kept" else "0\n")
            for _ in range(args.runs):
                for name, domain in (("DANE", "d.dane.test"), ("opportunistic", "insecure.test")):
                    rate, cpu, log = run(home, domain, args.n, args.c)
                    if name == "DANE" and "verified by DANE" not in log:
                        raise SystemExit("DANE was not applied: " + log[-500:])
                    results.setdefault((reuse, name), []).append((rate, cpu))
        here.send("done")
        received = here.recv()
        server.join()
    runs = f"{args.runs} runs each"
    print(f"{args.n} deliveries at concurrency {args.c}, {runs}; {received} received")
    for reuse in ("kept", "new"):
        label = "kept connections" if reuse == "kept" else "a new connection each time"
        med = {
            name: (
                statistics.median(r for r, _ in results[(reuse, name)]),
                statistics.median(c for _, c in results[(reuse, name)]) * 1000,
            )
            for name in ("DANE", "opportunistic")
        }
        print(f"{label}:")
        for name, (rate, cpu) in med.items():
            print(f"  {name:14s} {rate:7.1f} msg/s, qremoted {cpu:5.2f} ms CPU per delivery")
        ratio = med["DANE"][0] / med["opportunistic"][0]
        cpu_ratio = med["DANE"][1] / med["opportunistic"][1]
        print(f"  DANE / opportunistic: throughput {ratio:.2f}x, qremoted CPU {cpu_ratio:.2f}x")


if __name__ == "__main__":
    main()
