"""Concurrency caps per MX group: dozens of real qmail-remote processes against servers
that count simultaneous connections; the cap holds across processes (flock) and across
two qmail homes sharing one Redis; dead processes never keep a slot."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time

import pytest

from qremote.groups import rules
from tests.support import qmailhome
from tests.support.redisserver import RedisServer
from tests.support.smtpserver import STALL, Script, ScriptedServer, Slow
from tests.support.waiting import wait_until

MSG = b"Subject: t\n\nbody\n"


# -- the rules ---------------------------------------------------------------------------------


def test_rules_match_by_name_suffix_and_domain_and_default_to_the_mx_set():
    parsed, problems = rules.parse(
        [
            "# big providers",
            "google:5:aspmx.l.google.com,.googlemail.com",
            "ms:4:.protection.outlook.com",
            "special:2:@example.org",
            "*:7",
            "broken line",
            "bad:x:y",
        ]
    )
    assert problems == [
        "control/mxgroups line 6: 'broken line' is not name:limit:pattern[,pattern...]",
        "control/mxgroups line 7: 'bad:x:y' needs a name and a whole-number limit above 0",
    ]
    g = rules.group_for
    assert g("a.com", ["ASPMX.L.GOOGLE.COM."], parsed) == rules.Group("google", 5)
    assert g("b.com", ["alt1.aspmx.googlemail.com"], parsed) == rules.Group("google", 5)
    assert g("c.com", ["c-com.mail.protection.outlook.com"], parsed) == rules.Group("ms", 4)
    assert g("example.org", ["mx.example.org"], parsed) == rules.Group("special", 2)
    assert g("d.com", ["mx2.host.net", "mx1.host.net"], parsed) == rules.Group(
        "mx:mx1.host.net,mx2.host.net", 7
    )
    assert g("e.com", ["mx1.host.net", "mx2.host.net"], parsed).name == (
        "mx:mx1.host.net,mx2.host.net"
    )


def test_default_without_a_file():
    parsed, problems = rules.parse([])
    assert problems == [] and parsed.default_limit == rules.DEFAULT_LIMIT == 20


# -- helpers -----------------------------------------------------------------------------------


def start(home, domain: str, sender: str = "a@example.org") -> subprocess.Popen:
    stdin = tempfile.TemporaryFile()
    stdin.write(MSG)
    stdin.seek(0)
    return subprocess.Popen(
        [home.program, domain, sender, f"rcpt@{domain}"],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=home.path,
        env={},
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> bytes:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0
    return out


def shared_mx(zone, server, domains: list[str], mx="mx.shared.example"):
    for d in domains:
        zone.mx(d, (10, mx))
    zone.a(mx, server.ip)


# -- the local (flock) backend ----------------------------------------------------------------


def test_a_burst_to_many_domains_on_one_mx_set_never_exceeds_the_cap(home, zone):
    home.write("mxgroups", "*:3\n")
    domains = [f"d{i}.example" for i in range(24)]
    with ScriptedServer(Script(dot=Slow(0.3, "250 ok"))) as mx:
        shared_mx(zone, mx, domains)
        procs = [start(home, d) for d in domains]
        outs = [finish(p) for p in procs]
    assert all(o.startswith(b"r\0K") for o in outs), outs
    assert mx.max_active == 3
    assert len(mx.received) == 24


def test_two_groups_do_not_block_each_other(home, zone):
    home.write("mxgroups", "*:1\n")
    home.write("timeoutremote", "30\n")
    with ScriptedServer(Script(dot=STALL)) as busy, ScriptedServer() as free:
        zone.mx("busy.example", (10, "mx.busy.example"))
        zone.a("mx.busy.example", busy.ip)
        zone.mx("free.example", (10, "mx.free.example"))
        zone.a("mx.free.example", free.ip)
        holder = start(home, "busy.example")
        wait_until(lambda: busy.active == 1)
        t0 = time.monotonic()
        out = finish(start(home, "free.example"))
        elapsed = time.monotonic() - t0
        holder.kill()
        holder.wait()
    assert out.startswith(b"r\0K")
    assert elapsed < 20  # it did not wait for the busy group (mxgroupwait is 60)


def test_a_full_group_defers_after_mxgroupwait(home, zone):
    home.write("mxgroups", "slow:1:mx.busy.example\n")
    home.write("mxgroupwait", "1\n")
    home.write("timeoutremote", "30\n")
    with ScriptedServer(Script(dot=STALL)) as busy:
        zone.mx("busy.example", (10, "mx.busy.example"))
        zone.a("mx.busy.example", busy.ip)
        holder = start(home, "busy.example")
        wait_until(lambda: busy.active == 1)
        out = finish(start(home, "busy.example"))
        holder.kill()
        holder.wait()
    assert out == (
        b"ZToo many deliveries to MX group slow at once (limit 1); waited 1 seconds. (#4.4.5)\n"
        b"Not signed: no key for example.org in control/domainkeys.\n\0"
    )


def test_a_process_killed_mid_delivery_frees_its_slot(home, zone):
    home.write("mxgroups", "*:1\n")
    home.write("mxgroupwait", "10\n")
    home.write("timeoutremote", "30\n")
    with ScriptedServer(Script(dot=STALL)) as busy:
        zone.mx("busy.example", (10, "mx.busy.example"))
        zone.a("mx.busy.example", busy.ip)
        holder = start(home, "busy.example")
        wait_until(lambda: busy.active == 1)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        busy.script.dot = None
        out = finish(start(home, "busy.example"))
    assert out.startswith(b"r\0K")


def test_waiters_are_served_in_order(home, zone):
    home.write("mxgroups", "*:1\n")
    with ScriptedServer(Script(dot=Slow(0.8, "250 ok"))) as mx:
        shared_mx(zone, mx, ["q.example"])
        holder = start(home, "q.example", "holder@example.org")
        wait_until(lambda: mx.active == 1)
        waiters = []
        for i in range(4):
            waiters.append(start(home, "q.example", f"w{i}@example.org"))
            time.sleep(0.25)
        for p in [holder, *waiters]:
            finish(p)
    assert [r.mail_from for r in mx.received] == [
        "holder@example.org",
        "w0@example.org",
        "w1@example.org",
        "w2@example.org",
        "w3@example.org",
    ]


# -- the shared (Redis) backend ----------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
        yield server


def test_two_hosts_sharing_redis_keep_one_cap(home, zone, redis_server, tmp_path, dns_server):
    other = qmailhome.make(str(tmp_path / "second-host"), dns_server.address)
    for h in (home, other):
        h.write("mxgroups", "*:3\n")
        h.write("sharedstate", redis_server.url + "\n")
    domains = [f"r{i}.example" for i in range(24)]
    with ScriptedServer(Script(dot=Slow(0.3, "250 ok"))) as mx:
        shared_mx(zone, mx, domains, mx="mx.redis.example")
        procs = [start(home if i % 2 else other, d) for i, d in enumerate(domains)]
        outs = [finish(p) for p in procs]
    assert all(o.startswith(b"r\0K") for o in outs), outs
    assert not any(b"unreachable" in o for o in outs)
    assert mx.max_active == 3
    assert not os.path.exists(os.path.join(home.path, "qremote", "groups"))


def test_a_dead_hosts_lease_expires(home, zone, redis_server):
    home.write("mxgroups", "*:1\n")
    home.write("sharedstate", redis_server.url + "\n")
    home.write("sharedlease", "2\n")
    home.write("mxgroupwait", "10\n")
    home.write("timeoutremote", "30\n")
    with ScriptedServer(Script(dot=STALL)) as busy:
        zone.mx("lease.example", (10, "mx.lease.example"))
        zone.a("mx.lease.example", busy.ip)
        holder = start(home, "lease.example")
        wait_until(lambda: busy.active == 1)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        busy.script.dot = None
        t0 = time.monotonic()
        out = finish(start(home, "lease.example"))
    assert out.startswith(b"r\0K")
    assert time.monotonic() - t0 < 9


def test_unreachable_redis_falls_back_to_local_caps_and_says_so(home, zone):
    home.write("sharedstate", "redis://127.0.0.1:1/0\n")
    with ScriptedServer() as mx:
        shared_mx(zone, mx, ["fallback.example"])
        out = finish(start(home, "fallback.example"))
    assert out.startswith(b"r\0K")
    assert (
        b"Shared state redis://127.0.0.1:1/0 unreachable (ConnectionError); "
        b"local MX-group caps used.\n" in out
    )


@pytest.mark.parametrize("backend", ["local", "shared"])
def test_status_shows_slots_waiters_and_tcpto(home, zone, redis_server, backend):
    home.write("mxgroups", "*:1\n")
    home.write("timeoutremote", "30\n")
    if backend == "shared":
        home.write("sharedstate", redis_server.url + "\n")
    with open(home.tcpto, "r+b") as f:
        f.write(bytes([192, 0, 2, 9, 3, 0, 0, 0]) + int(time.time() - 50).to_bytes(4, "little"))
    with ScriptedServer(Script(dot=STALL)) as busy:
        zone.mx("status.example", (10, "mx.status.example"))
        zone.a("mx.status.example", busy.ip)
        holder = start(home, "status.example")
        wait_until(lambda: busy.active == 1)
        waiter = start(home, "status.example")
        time.sleep(0.5)
        done = home.qremote("status")
        for p in (holder, waiter):
            p.kill()
            p.wait()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    section = "MX groups, shared" if backend == "shared" else "MX groups, local"
    start_at = next(i for i, line in enumerate(lines) if line.startswith(section))
    assert lines[start_at + 1] == "  mx:mx.status.example  in use    1  waiting    1"
    assert any(
        line.startswith("  192.0.2.9 timed out ") and line.endswith("; # recent timeouts: 3")
        for line in lines
    )


def test_check_reports_bad_group_lines(home):
    home.write("mxgroups", "good:3:.example.com\nnot a rule\n*:zero\n")
    home.write("sharedstate", "http://redis.example\n")
    done = home.qremote("check", "--user", "root")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "control/mxgroups line 2: 'not a rule' is not name:limit:pattern[,pattern...]",
        "control/mxgroups line 3: '*:zero' is not *:limit (a whole number above 0)",
        "control/sharedstate: 'http://redis.example' is not a redis:// URL",
    ]


# -- tcpto shared through Redis ------------------------------------------------------------------


def test_a_time_out_seen_by_one_host_is_shared_with_the_fleet(
    home, zone, redis_server, tmp_path, dns_server
):
    import redis as sync_redis

    from tests.support.blackhole import Blackhole

    client = sync_redis.Redis.from_url(redis_server.url, decode_responses=True)
    other = qmailhome.make(str(tmp_path / "second-host"), dns_server.address)
    for h in (home, other):
        h.write("sharedstate", redis_server.url + "\n")
        h.write("timeoutconnect", "1\n")
    with Blackhole() as dead, ScriptedServer() as backup:
        zone.mx("fleet.example", (10, "dead.fleet.example"), (20, "backup.fleet.example"))
        zone.a("dead.fleet.example", dead.ip)
        zone.a("backup.fleet.example", backup.ip)
        first = finish(start(home, "fleet.example"))
        assert first.startswith(b"r\0K" + backup.ip.encode())
        assert client.hget(f"qremote:tcpto:{dead.ip}", "count") == "1"
        # A second time-out somewhere in the fleet, long enough ago to count (qmail
        # ignores one within 120 seconds of the last):
        now = int(client.time()[0])
        client.hset(f"qremote:tcpto:{dead.ip}", mapping={"count": 2, "when": now - 10})
        t0 = time.monotonic()
        second = finish(start(other, "fleet.example"))
        elapsed = time.monotonic() - t0
    assert second.startswith(b"r\0K" + backup.ip.encode())
    assert elapsed < 1  # the other host did not wait for the dead one
    with open(other.tcpto, "rb") as f:
        assert f.read() == b"\0" * 1024  # it learned from the fleet, not from a time-out
    status = other.qremote("status").stdout
    assert f"  {dead.ip} timed out " in status and "# recent timeouts: 2" in status


def test_a_running_delivery_renews_its_lease(home, zone, redis_server):
    """A delivery longer than the lease keeps its slot: nobody else gets in meanwhile."""
    home.write("mxgroups", "*:1\n")
    home.write("sharedstate", redis_server.url + "\n")
    home.write("sharedlease", "1\n")
    home.write("mxgroupwait", "2\n")
    with ScriptedServer(Script(dot=Slow(4.0, "250 ok"))) as mx:
        shared_mx(zone, mx, ["renew.example"])
        holder = start(home, "renew.example", "holder@example.org")
        wait_until(lambda: mx.active == 1)
        second = finish(start(home, "renew.example", "second@example.org"))
        first = finish(holder)
    assert first.startswith(b"r\0K")
    assert second.startswith(b"ZToo many deliveries to MX group mx:mx.shared.example at once")
    assert mx.max_active == 1


# -- the local backend: O(1) per slot, across processes, never held by the dead ----------

HOLD = """
import asyncio, sys, time
from qremote.groups.filelocks import FileBackend
async def main():
    backend = FileBackend(sys.argv[1])
    slots = [await backend.acquire("g", int(sys.argv[2]), 0) for _ in range(int(sys.argv[3]))]
    print(sum(s is not None for s in slots), flush=True)
    time.sleep(60)
asyncio.run(main())
"""


def _holder(root: str, limit: int, count: int):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, root, str(limit), str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, int(proc.stdout.readline())


def test_a_slot_costs_the_same_with_two_thousand_held(tmp_path, monkeypatch):
    """Counted at the system-call boundary: locks taken for one more slot do not grow with
    the slots already held (probing a file per slot did: a thousand locks at a thousand)."""
    import asyncio
    import fcntl

    from qremote.groups.filelocks import FileBackend

    calls = []
    real = fcntl.flock
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: calls.append(op) or real(fd, op))
    backend = FileBackend(str(tmp_path))

    async def take(n: int) -> list:
        return [await backend.acquire("big", 5000, 0) for _ in range(n)]

    first = asyncio.run(take(1))
    calls.clear()
    asyncio.run(take(1))
    one = len(calls)
    held = asyncio.run(take(2000))
    calls.clear()
    asyncio.run(take(1))
    assert len(calls) == one <= 4
    assert all(s is not None for s in held + first)
    group = [d for d in os.listdir(tmp_path / "groups") if not d.startswith(".")][0]
    assert sorted(os.listdir(tmp_path / "groups" / group)) == ["count", "name", "tickets"]


def test_processes_share_a_cap_and_a_killed_ones_slots_come_back(tmp_path):
    import asyncio

    from qremote.groups.filelocks import FileBackend

    root = str(tmp_path)
    other, got = _holder(root, 10, 7)
    try:
        assert got == 7
        backend = FileBackend(root)

        async def take(n: int) -> list:
            return [await backend.acquire("g", 10, 0) for _ in range(n)]

        mine = asyncio.run(take(4))
        assert [s is not None for s in mine] == [True, True, True, False]
        assert backend.status() == [("g", 10, 0)]
        other.send_signal(signal.SIGKILL)
        other.wait()
        again = asyncio.run(take(8))
        assert sum(s is not None for s in again) == 7  # the dead holder's seven
        for slot in mine[:3] + again:
            if slot is not None:
                slot.release()
        assert backend.status() == [("g", 0, 0)]
    finally:
        other.kill()
        other.wait()
