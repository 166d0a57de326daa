"""bench/startup: what one qmail-remote delivery costs, against the bare interpreter.

qmail-send starts one qmail-remote per delivery, so start-up is paid on every message.
This runs N deliveries of a small message through the installed wrapper (exactly as
qmail-rspawn would: stdin a file, empty environment) to an aiosmtpd server on loopback,
and N runs of ``python -c pass`` with the same interpreter, and prints the medians of
wall-clock and CPU time (user+sys of the child) with their ratio.

    python bench/startup.py [-n 30]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import qmailhome  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402
from tests.support.smtpserver import ScriptedServer, free_port  # noqa: E402

MESSAGE = b"From: a@example.org\nTo: b@example.net\nSubject: bench\n\n" + b"hello\n" * 50


def timed(argv: list[str], stdin_data: bytes, cwd: str) -> tuple[float, float, bytes]:
    with tempfile.TemporaryFile() as stdin:
        stdin.write(stdin_data)
        stdin.seek(0)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env={}
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=30)
    args = ap.parse_args()
    port = free_port()
    with (
        tempfile.TemporaryDirectory() as top,
        ScriptedServer(ip="127.0.0.1", port=port),
        ScriptedServer() as mx,
        DnsServer() as dns,
    ):
        dns.zone.mx("mx.test", (10, "mx1.mx.test"))
        dns.zone.a("mx1.mx.test", mx.ip)
        home = qmailhome.make(os.path.join(top, "qmail"), dns.address)
        home.write("smtproutes", f"bench.test:127.0.0.1:{port}\n")
        deliveries, via_mx, bare, bare_is = [], [], [], []
        for _ in range(args.n):
            wall, cpu, out = timed(
                [home.program, "bench.test", "a@example.org", "b@bench.test"], MESSAGE, home.path
            )
            assert out.startswith(b"r\0K"), out
            deliveries.append((wall, cpu))
            wall, cpu, out = timed(
                [home.program, "mx.test", "a@example.org", "b@mx.test"], MESSAGE, home.path
            )
            assert out.startswith(b"r\0K"), out
            via_mx.append((wall, cpu))
            bare.append(timed([sys.executable, "-c", "pass"], b"", home.path)[:2])
            bare_is.append(timed([sys.executable, "-IS", "-c", "pass"], b"", home.path)[:2])
    d_wall = statistics.median(w for w, _ in deliveries)
    d_cpu = statistics.median(c for _, c in deliveries)
    b_wall = statistics.median(w for w, _ in bare)
    b_cpu = statistics.median(c for _, c in bare)
    i_wall = statistics.median(w for w, _ in bare_is)
    i_cpu = statistics.median(c for _, c in bare_is)
    print(f"runs: {args.n} each, medians")
    print(f"python -IS -c pass    wall {i_wall * 1000:7.1f} ms   cpu {i_cpu * 1000:7.1f} ms")
    print(f"python -c pass        wall {b_wall * 1000:7.1f} ms   cpu {b_cpu * 1000:7.1f} ms")
    m_wall = statistics.median(w for w, _ in via_mx)
    m_cpu = statistics.median(c for _, c in via_mx)
    print(f"delivery, IP relay    wall {d_wall * 1000:7.1f} ms   cpu {d_cpu * 1000:7.1f} ms")
    print(f"delivery, MX lookup   wall {m_wall * 1000:7.1f} ms   cpu {m_cpu * 1000:7.1f} ms")
    for label, w, c in (("IP relay", d_wall, d_cpu), ("MX lookup", m_wall, m_cpu)):
        print(f"{label:<10} / python -c    wall {w / b_wall:5.1f} x   cpu {c / b_cpu:5.1f} x")
        print(f"{label:<10} / python -IS   wall {w / i_wall:5.1f} x   cpu {c / i_cpu:5.1f} x")


if __name__ == "__main__":
    main()
