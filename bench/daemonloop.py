"""bench/daemonloop: qremoted's CPU per delivery on asyncio's event loop and on uvloop's.

The same qremoted code, started once with asyncio's loop and once after
``uvloop.install()``, takes the same deliveries (5 clients at a time, a small message
signed with DKIM + DomainKeys, over kept connections to a loopback aiosmtpd server); the
figure is the daemon's own CPU (utime + stime) per delivery, medians of R rounds that
alternate the two. uvloop is not a dependency of qremote: install it to run this
(``pip install uvloop``).

    python bench/daemonloop.py [-n 300] [-r 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qremote.daemon import client  # noqa: E402
from tests.support import qmailhome, rspawn  # noqa: E402
from tests.support.keys import write_key  # noqa: E402
from tests.support.smtpserver import ScriptedServer  # noqa: E402

MESSAGE = b"From: a@example.org\nTo: b@x\nSubject: loop\n\n" + b"hello\n" * 30
START = {
    "asyncio": "import sys\n",
    "uvloop": "import sys, uvloop\nuvloop.install()\n",
}


def cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(loop: str, mx_ip: str, n: int) -> float:
    """ms of qremoted CPU per delivery for n deliveries, 5 at a time, after a warm-up."""
    with tempfile.TemporaryDirectory() as top:
        home = qmailhome.make(os.path.join(top, "qmail"), "127.0.0.1:9")
        write_key(home.control, "example.org", "bench")
        code = START[loop] + "from qremote.cli.qremote import main\nsys.exit(main(['daemon']))"
        daemon = subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, "QMAILHOME": home.path},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while client.status(home.path) is None:
                time.sleep(0.05)

            def work(k: int) -> None:
                for _ in range(k):
                    run = rspawn.run(home.program, home.path, f"[{mx_ip}]", "a@b", ["b@x"], MESSAGE)
                    assert run.qmail.startswith(b"K"), run.output

            work(20)
            before = cpu(daemon.pid)
            threads = [threading.Thread(target=work, args=(n // 5,)) for _ in range(5)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return (cpu(daemon.pid) - before) / (n // 5 * 5) * 1000
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("-r", type=int, default=3)
    args = ap.parse_args()
    try:
        import uvloop  # noqa: F401
    except ImportError:
        sys.exit("bench/daemonloop: uvloop is not installed (pip install uvloop)")
    results: dict[str, list[float]] = {"asyncio": [], "uvloop": []}
    with ScriptedServer() as mx:
        for _ in range(args.r):
            for loop in results:
                results[loop].append(one(loop, mx.ip, args.n))
    med = {loop: statistics.median(v) for loop, v in results.items()}
    for loop, values in results.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"{loop:8} qremoted CPU per delivery {med[loop]:.2f} ms (runs: {runs})")
    print(f"uvloop / asyncio: {med['uvloop'] / med['asyncio']:.2f}x")


if __name__ == "__main__":
    main()
