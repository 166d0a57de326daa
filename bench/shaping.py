"""bench/shaping: what traffic shaping (control/shaping.toml) costs a delivery when no
limit is near, against the MX-group slot every delivery already takes (file backend)
and against qremoted's CPU per delivery (bench/drain.py, about 2 ms).

Per delivery, medians of several rounds of 2000 calls each:
- no shaping for the path (the common case): a dictionary lookup;
- automation rules on the path (its state file looked for: one failed open);
- a message rate on the path that is never reached (GCRA: open, flock, read, write);
- both, then the failed-delivery check after a success (nothing to match);
- peer: taking and releasing an MX-group slot (groups/filelocks.py).

Each case twice: with this host's files, and with ``control/sharedstate`` naming a Redis
on loopback (a real redis-server, started for the run).

    python bench/shaping.py [--rounds 5]
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

from qremote.delivery import shape  # noqa: E402
from qremote.delivery.outcome import Notes, Outcome  # noqa: E402
from qremote.delivery.resources import Resources  # noqa: E402
from qremote.groups.filelocks import FileBackend  # noqa: E402
from qremote.metrics.trace import Trace  # noqa: E402
from qremote.settings import load_settings  # noqa: E402
from qremote.shaping.config import path_for  # noqa: E402
from tests.support import qmailhome  # noqa: E402
from tests.support.redisserver import RedisServer  # noqa: E402

FILE = """
[provider."google"]
match = [{MXSuffix = ".google.example"}]
[[provider."google".automation]]
regex = "unusual rate of\\\\s+unsolicited mail"
action = "Suspend"
duration = "1h"

["rated.example"]
max_message_rate = "1000000/s"

["both.example"]
max_message_rate = "1000000/s"
[[ "both.example".automation ]]
regex = "TSS04"
action = "Suspend"
duration = "1h"
"""

CASES = {
    "no shaping on the path": ("plain.example", "mx.plain.example"),
    "automation rules only": ("gmail.example", "mx.google.example"),
    "a rate never reached": ("rated.example", "mx.rated.example"),
    "rate + rules + outcome check": ("both.example", "mx.both.example"),
}
N = 2000


async def per_call_us(settings, resources, domain: str, mx: str, observe: bool) -> float:
    path = path_for(settings.shaping.shaping, domain, [mx], f"mx:{mx}")
    ok = Outcome([b"r127.0.0.1 accepted"], b"K127.0.0.1 accepted message.")
    start = time.perf_counter()
    for _ in range(N):
        assert await shape.admit(settings, resources, path, "192.0.2.1", Notes(), Trace()) is None
        if observe:
            await shape.observe(settings, resources, path, "192.0.2.1", ok)
    return (time.perf_counter() - start) / N * 1e6


async def slot_us(root: str) -> float:
    backend = FileBackend(root)
    start = time.perf_counter()
    for _ in range(N):
        slot = await backend.acquire("bench", 10, 5.0)
        slot.release()
    return (time.perf_counter() - start) / N * 1e6


async def measure(home, rounds: int, url: str | None) -> dict[str, list[float]]:
    if url:
        home.write("sharedstate", url + "\n")
    settings = load_settings(home.path)
    assert settings.shaping.problems == () and settings.shaping.error is None
    resources = Resources.standalone(settings)
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    try:
        for _ in range(rounds):
            for name, (domain, mx) in CASES.items():
                observe = name.startswith("rate + rules")
                took = await per_call_us(settings, resources, domain, mx, observe)
                samples[name].append(took)
    finally:
        await resources.close()
    return samples


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as top, RedisServer() as redis_server:
        home = qmailhome.make(os.path.join(top, "qmail"))
        home.write("shaping.toml", FILE)
        local = await measure(home, rounds, None)
        shared = await measure(home, rounds, redis_server.url)
        slot = [await slot_us(os.path.join(home.path, "qremote")) for _ in range(rounds)]
    peer = statistics.median(slot)
    print(f"{rounds} rounds of {N} deliveries; median µs per delivery (range), / MX-group slot")
    print(f"{'peer: MX-group slot (file)':40s} {peer:8.1f} µs ({min(slot):.1f}-{max(slot):.1f})")
    for where, samples in (("local", local), ("Redis", shared)):
        for name, values in samples.items():
            med = statistics.median(values)
            label = f"{where}: {name}"
            spread = f"({min(values):.1f}-{max(values):.1f})"
            print(f"{label:40s} {med:8.1f} µs {spread:14s} {med / peer:5.2f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(ap.parse_args().rounds))
