"""bench/mxgroups: what an MX-group cap costs a delivery, and how it behaves under contention.

1. Taking and releasing a slot (file backend, Redis backend), in microseconds, against one
   whole in-process delivery to a loopback SMTP server: the ratio is what caps add.
2. k waiters contending for a group of limit 1 (each takes, releases, and queues again):
   hand-offs per second and the median wait, for growing k, both backends.

    python bench/mxgroups.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qremote.delivery import deliver  # noqa: E402
from qremote.groups.filelocks import FileBackend  # noqa: E402
from qremote.groups.shared import SharedBackend  # noqa: E402
from qremote.settings import load_settings  # noqa: E402
from tests.support import qmailhome  # noqa: E402
from tests.support.redisserver import RedisServer  # noqa: E402
from tests.support.smtpserver import ScriptedServer, free_port  # noqa: E402

MESSAGE = b"From: a@example.org\nSubject: bench\n\n" + b"hello\n" * 50


async def take_release_us(backend, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        slot = await backend.acquire("bench-solo", 10, 5.0)
        slot.release()
    await asyncio.sleep(0)
    return (time.perf_counter() - start) / n * 1e6


async def delivery_ms(home: str, n: int) -> float:
    settings = load_settings(home)
    start = time.perf_counter()
    for _ in range(n):
        out = await deliver(settings, "bench.test", b"a@example.org", [b"b@bench.test"], MESSAGE)
        assert out.message.startswith(b"K"), out.message
    return (time.perf_counter() - start) / n * 1e3


async def contention(backend, k: int, seconds: float) -> tuple[float, float]:
    handoffs = 0
    waits: list[float] = []
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal handoffs
        while time.monotonic() < stop:
            t0 = time.monotonic()
            slot = await backend.acquire("bench-contended", 1, 30.0)
            waits.append(time.monotonic() - t0)
            handoffs += 1
            await asyncio.sleep(0)
            slot.release()
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(k)))
    return handoffs / seconds, statistics.median(waits) * 1000


async def main_async(rounds: int) -> None:
    port = free_port()
    with (
        tempfile.TemporaryDirectory() as top,
        ScriptedServer(ip="127.0.0.1", port=port),
        RedisServer() as redis_server,
    ):
        home = qmailhome.make(os.path.join(top, "qmail"))
        home.write("smtproutes", f"bench.test:127.0.0.1:{port}\n")
        local = FileBackend(os.path.join(home.path, "qremote"))
        shared = SharedBackend(redis_server.url)
        file_us = statistics.median([await take_release_us(local, 300) for _ in range(rounds)])
        redis_us = statistics.median([await take_release_us(shared, 300) for _ in range(rounds)])
        d_ms = statistics.median([await delivery_ms(home.path, 30) for _ in range(rounds)])
        print(f"medians of {rounds} rounds")
        print(f"in-process delivery (loopback SMTP)   {d_ms:8.2f} ms")
        print(f"take + release, file backend          {file_us:8.1f} us"
              f"   delivery with cap / without: {(d_ms + file_us / 1000) / d_ms:.3f}")
        print(f"take + release, Redis backend         {redis_us:8.1f} us"
              f"   delivery with cap / without: {(d_ms + redis_us / 1000) / d_ms:.3f}")
        print("contention for one slot (limit 1): hand-offs/s, median wait")
        for k in (1, 4, 16, 64):
            f_rate, f_wait = await contention(local, k, 2.0)
            r_rate, r_wait = await contention(shared, k, 2.0)
            print(f"  {k:3d} waiters   file {f_rate:7.0f}/s {f_wait:7.1f} ms"
                  f"   redis {r_rate:7.0f}/s {r_wait:7.1f} ms")
        await shared.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    asyncio.run(main_async(args.rounds))


if __name__ == "__main__":
    main()
