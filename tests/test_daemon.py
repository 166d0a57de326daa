"""qremoted and the thin qmail-remote: the same reports as the standalone path, whatever
state the daemon is in; connections reused; nothing lost when it dies."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from qremote.cli.check import problems
from qremote.daemon import client, wire
from tests.support import certs, qmailhome
from tests.support.daemon import Qremoted
from tests.support.expect import UNSIGNED
from tests.support.redisserver import RedisServer
from tests.support.smtpserver import Script, ScriptedServer, Slow
from tests.support.waiting import wait_until

MESSAGE = b"From: a@example.org\nTo: b@example.net\nSubject: hi\n\nbody\n"


def accepted(ip: str, reused: int | None = None) -> bytes:
    text = b"r\0K" + ip.encode() + b" accepted message.\n"
    text += b"Remote host said: 250 2.0.0 Ok: queued as 1234\n" + UNSIGNED
    if reused is not None:
        text += f"Reused the connection to {ip} (message {reused} on it).\n".encode()
    return text + b"\0"


@pytest.fixture(params=["python-client", "compiled-client"])
def home(request, tmp_path, dns_server, zone):
    """Every test here runs with both thin clients: the Python one, and the compiled one
    (built with sanitizers), which must behave byte for byte the same."""
    made = qmailhome.make(str(tmp_path / "qmail"), dns_server.address)
    if request.param == "compiled-client":
        qmailhome.use_compiled_client(made)
    return made


@pytest.fixture
def mx(zone):
    with ScriptedServer() as server:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", server.ip)
        yield server


@contextlib.contextmanager
def slow_mx(zone, seconds: float, reply: str = "250 2.0.0 Ok: queued as 1234"):
    """example.net's MX, answering the final dot after ``seconds``."""
    with ScriptedServer(Script(dot=Slow(seconds, reply))) as server:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", server.ip)
        yield server


@contextlib.contextmanager
def one_mx_for(zone, domains: list[str], seconds: float, name: str = "mx.many.example"):
    """One MX host for all ``domains``, answering the final dot after ``seconds``."""
    with ScriptedServer(Script(dot=Slow(seconds, "250 2.0.0 Ok: queued as 1234"))) as server:
        for d in domains:
            zone.mx(d, (10, name))
        zone.a(name, server.ip)
        yield server


@pytest.fixture
def qremoted(home):
    with Qremoted(home) as daemon:
        yield daemon


def logged(daemon, pattern: str, count: int = 1) -> str:
    """The daemon's log once ``pattern`` is in it ``count`` times: qremoted writes its line
    after it has answered the client, so a fast client can be back before the line is."""
    wait_until(lambda: len(re.findall(pattern, daemon.log())) >= count, 15)
    return daemon.log()


def send(home):
    return home.deliver("example.net", "a@example.org", ["b@example.net"], MESSAGE)


def one_to(home, domain: str):
    """One delivery to ``domain``, its Subject the domain (to tell the messages apart)."""
    message = MESSAGE.replace(b"Subject: hi", f"Subject: {domain}".encode())
    return home.deliver(domain, "a@example.org", [f"rcpt@{domain}"], message)


def in_background(fn, *args):
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("run", fn(*args)))
    thread.start()
    return thread, result


# -- the same reports ----------------------------------------------------------------------


def test_daemon_delivery_reports_exactly_what_the_standalone_path_reports(home, mx, qremoted):
    run = send(home)
    assert run.status == 0
    assert run.output == accepted(mx.ip)
    [got] = mx.received
    assert got.content == MESSAGE.replace(b"\n", b"\r\n")
    logged(qremoted, r"delivery pid \d+ to example.net from <a@example.org> rcpt r: K")


def test_a_request_larger_than_one_socket_read_arrives_whole(home, mx, qremoted):
    recipients = [f"recipient-number-{i:05d}@example.net" for i in range(2500)]  # ~100 KB
    run = home.deliver("example.net", "a@example.org", recipients, MESSAGE)
    assert run.reports[:-1] == [b"r"] * 2500
    assert run.reports[-1].startswith(b"K")
    assert mx.received[0].rcpt_tos == recipients
    logged(qremoted, r"delivery pid \d+ to example.net from <a@example.org> rcpt 2500r: K")


@pytest.mark.parametrize(
    "case",
    ["bad control file", "recipient refused", "no such domain", "partial final line", "bounce"],
)
def test_every_kind_of_outcome_reads_the_same_through_the_daemon(home, zone, case):
    """Byte for byte what the in-process path writes, whatever the outcome."""
    message, sender, domain = MESSAGE, "a@example.org", "example.net"
    script = Script()
    if case == "bad control file":
        home.write("timeoutremote", "soon\n")
    elif case == "recipient refused":
        script = Script(rcpt=["550 5.1.1 no such user", None])
    elif case == "no such domain":
        domain = "missing.example"
    elif case == "partial final line":
        message = MESSAGE + b"no line end"
    else:
        sender = ""
    with ScriptedServer(script) as server:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", server.ip)
        rcpts = ["x@example.net", "b@example.net"]
        alone = home.deliver_standalone(domain, sender, rcpts, message)
        with Qremoted(home) as daemon:
            through = home.deliver(domain, sender, rcpts, message)
            logged(daemon, "delivery pid")
    assert through.output == alone.output
    assert through.status == alone.status == 0


def test_without_a_daemon_the_thin_client_delivers_in_process(home, mx):
    assert client.status(home.path) is None
    run = send(home)
    assert run.output == accepted(mx.ip)


def test_a_stale_socket_left_by_a_dead_daemon_does_not_stop_mail(home, mx):
    daemon = Qremoted(home).start()
    daemon.kill()
    assert os.path.exists(os.path.join(home.path, "qremote", "qremoted.sock"))
    run = send(home)
    assert run.output == accepted(mx.ip)


# -- connection reuse ----------------------------------------------------------------------


def test_messages_to_the_same_mx_share_one_connection_with_rset_between(home, mx, qremoted):
    first, second, third = send(home), send(home), send(home)
    assert first.output == accepted(mx.ip)
    assert second.output == accepted(mx.ip, reused=2)
    assert third.output == accepted(mx.ip, reused=3)
    [conn] = mx.connections
    assert [c.split()[0] for c in conn.commands] == [
        "EHLO", "MAIL", "RCPT", "RSET", "MAIL", "RCPT", "RSET", "MAIL", "RCPT"
    ]  # fmt: skip
    assert len(mx.received) == 3
    assert "cached connections: 1" in qremoted.status()


def test_an_idle_connection_is_closed_after_reuseidle_seconds(home, mx):
    home.write("reuseidle", "3\n")
    with Qremoted(home) as daemon:
        send(home)
        assert "cached connections: 1" in daemon.status()
        wait_until(lambda: mx.connections[0].quit)
        assert "cached connections: 0" in daemon.status()
        assert send(home).output == accepted(mx.ip)
    assert len(mx.connections) == 2


def test_reuseidle_0_turns_reuse_off(home, mx):
    home.write("reuseidle", "0\n")
    with Qremoted(home):
        send(home)
        send(home)
    assert len(mx.connections) == 2
    assert all(c.quit for c in mx.connections)


def test_reusemessages_caps_what_one_connection_carries(home, mx):
    home.write("reusemessages", "2\n")
    with Qremoted(home):
        runs = [send(home) for _ in range(3)]
    assert runs[1].output == accepted(mx.ip, reused=2)
    assert runs[2].output == accepted(mx.ip)
    assert len(mx.connections) == 2
    assert mx.connections[0].quit


def test_a_kept_connection_refusing_rset_is_replaced_by_a_new_one(home, zone, qremoted):
    with ScriptedServer(Script(rset="421 4.3.2 going away")) as server:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", server.ip)
        send(home)
        run = send(home)
    assert run.output == accepted(server.ip)
    assert len(server.connections) == 2
    assert len(server.received) == 2


def test_a_kept_connection_the_server_closed_is_replaced_by_a_new_one(home, zone, qremoted):
    with ScriptedServer() as server:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", server.ip)
        send(home)
    with ScriptedServer(ip=server.ip) as again:
        run = send(home)
    assert run.output == accepted(server.ip)
    assert len(again.received) == 1


def test_a_server_that_answers_the_dot_with_421_is_not_reused(home, zone, qremoted):
    with ScriptedServer(Script(dot="421 4.3.0 closing")) as server:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", server.ip)
        first = send(home)
        send(home)
    assert first.qmail.startswith(b"Z")
    assert len(server.connections) == 2
    assert server.connections[0].quit


def test_a_connection_is_reused_only_within_its_mx_group(home, zone, qremoted):
    """Its slot counts against the group it was opened for."""
    home.write("mxgroups", "special:5:@d1.example\n")
    with ScriptedServer() as server:
        for d in ("d1.example", "d2.example"):
            zone.mx(d, (10, "mx.shared.example"))
        zone.a("mx.shared.example", server.ip)
        runs = [
            home.deliver(d, "a@example.org", [f"b@{d}"], MESSAGE)
            for d in ("d1.example", "d2.example", "d1.example")
        ]
    assert [b"Reused" in r.output for r in runs] == [False, False, True]
    assert len(server.connections) == 2


def two_servers_in_one_group(home, zone, limit: int):
    """d1.example and d2.example on two MX servers that share one MX group."""
    home.write("mxgroups", f"pair:{limit}:@d1.example,@d2.example\n")
    home.write("reuseidle", "30\n")
    one, two = ScriptedServer(), ScriptedServer()
    for domain, server in (("d1.example", one), ("d2.example", two)):
        zone.mx(domain, (10, f"mx.{domain}"))
        zone.a(f"mx.{domain}", server.ip)
    return one, two


def to(home, domain: str):
    return home.deliver(domain, "a@example.org", [f"b@{domain}"], MESSAGE)


def test_an_idle_connection_is_closed_for_another_delivery_only_when_its_group_is_full(
    home, zone, qremoted
):
    one, two = two_servers_in_one_group(home, zone, limit=1)
    with one, two:
        first, second = to(home, "d1.example"), to(home, "d2.example")
        wait_until(lambda: one.connections[0].quit)  # closed to free the group's one slot
        third = to(home, "d1.example")
    assert [b"Reused" in r.output for r in (first, second, third)] == [False, False, False]
    assert second.qmail.startswith(b"K") and third.qmail.startswith(b"K")
    assert len(one.connections) == 2


def test_while_its_group_has_a_free_slot_an_idle_connection_stays_open(home, zone, qremoted):
    one, two = two_servers_in_one_group(home, zone, limit=2)
    with one, two:
        runs = [to(home, d) for d in ("d1.example", "d2.example", "d1.example", "d2.example")]
    assert [b"Reused" in r.output for r in runs] == [False, False, True, True]
    assert len(one.connections) == len(two.connections) == 1


@pytest.mark.parametrize("required", [False, True], ids=["opportunistic", "verified"])
def test_a_new_connection_resumes_the_tls_session_of_the_last_one(home, zone, tmp_path, required):
    home.write("reuseidle", "0\n")  # a new connection each time
    authority = certs.Authority.create()
    if required:
        home.write("tlshosts/mx1.example.net.pem", authority.pem().decode())
    tls = certs.server_context(*authority.issue("mx1.example.net"), str(tmp_path / "server"))
    with Qremoted(home), ScriptedServer(tls_context=tls) as server:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", server.ip)
        first, second = send(home), send(home)
    verified = "verified" if required else "not verified"
    assert f"TLSv1.3 TLS_AES_256_GCM_SHA384, {verified}\n" in first.output.decode()
    assert f"TLSv1.3 TLS_AES_256_GCM_SHA384, {verified}, resumed\n" in second.output.decode()
    assert [c.tls for c in server.connections] == [True, True]


def test_an_idle_connection_holds_its_shared_lease_until_it_closes(home, mx):
    with RedisServer() as redis:
        home.write("sharedstate", redis.url + "\n")
        home.write("reuseidle", "4\n")
        with Qremoted(home):
            first, second = send(home), send(home)
            idle = shared_groups(home)
            wait_until(lambda: mx.connections[0].quit)
            wait_until(lambda: shared_groups(home) == "  (no deliveries holding or waiting)")
    assert b"Reused" in second.output and b"Shared state" not in first.output
    assert re.fullmatch(r"  \S+ +in use +1 +waiting +0", idle)


def shared_groups(home) -> str:
    """The shared MX-group lines of ``qremote status``."""
    shared = re.compile(r"MX groups, shared .*?:\n(.*?)\ntcpto", re.S)
    return shared.search(home.qremote("status").stdout).group(1)


def test_control_file_changes_are_seen_without_a_restart(home, mx, qremoted):
    send(home)
    home.write("helohost", "other.example.org\n")
    send(home)
    assert [c.commands[0] for c in mx.connections] == [
        "EHLO me.example.org",
        "EHLO other.example.org",
    ]
    wait_until(lambda: mx.connections[0].quit)  # opened under the old settings: closed


def test_mx_group_caps_hold_across_daemon_and_standalone_deliveries(home, zone, qremoted):
    home.write("mxgroups", "*:3\n")
    home.write("reuseidle", "1\n")
    domains = [f"d{i}.example" for i in range(16)]
    with ScriptedServer(Script(dot=Slow(0.3, "250 ok"))) as server:
        for d in domains:
            zone.mx(d, (10, "mx.shared.example"))
        zone.a("mx.shared.example", server.ip)
        threads = [
            in_background(
                home.deliver if i % 2 else home.deliver_standalone,
                d,
                "a@example.org",
                [f"rcpt@{d}"],
                MESSAGE,
            )
            for i, d in enumerate(domains)
        ]
        for thread, _ in threads:
            thread.join()
    assert all(r["run"].output.startswith(b"r\0K") for _, r in threads)
    assert len(server.received) == 16
    assert server.max_active <= 3
    assert logged(qremoted, "delivery pid", 8).count("delivery pid") == 8


def test_sighup_rereads_a_change_the_daemon_could_not_see(home, mx, qremoted):
    path = home.write("helohost", "aaaa.example.org\n")
    send(home)
    stamp = os.stat(path)
    with open(path, "r+") as f:  # same inode, size and mtime: invisible to the check
        f.write("bbbb.example.org\n")
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    send(home)
    qremoted.signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP" in qremoted.log())
    send(home)
    helos = [c.commands[0] for c in mx.connections]
    assert helos == ["EHLO aaaa.example.org", "EHLO bbbb.example.org"]


def test_mx_answers_are_cached_by_the_daemon_within_their_ttl(home, mx, zone, qremoted):
    send(home)
    send(home)
    assert zone.queries.count(("example.net", "MX")) == 1


def test_a_long_run_leaks_no_descriptors(home, zone):
    """Queue files, client sockets, SMTP connections and slot locks all go back."""
    home.write("reuseidle", "1\n")
    with ScriptedServer() as server:
        for i in range(4):
            zone.mx(f"d{i}.example", (10, f"mx{i % 2}.example"))
        zone.a("mx0.example", server.ip)
        zone.a("mx1.example", "127.0.0.1")  # refused: a connection attempt every time
        with Qremoted(home) as daemon:
            fds = os.path.join("/proc", str(daemon.proc.pid), "fd")
            home.deliver("d0.example", "a@example.org", ["b@d0.example"], MESSAGE)
            wait_until(lambda: "cached connections: 0" in daemon.status())
            # At rest: stdin, the log twice, epoll, the loop's self-pipe pair, the lock, the
            # alive lock, the MX-group holder file and the listening socket; waiting for
            # exactly that lets the status query close.
            wait_until(lambda: len(os.listdir(fds)) == 10)
            before = len(os.listdir(fds))
            for n in range(60):
                d = f"d{n % 4}.example"
                home.deliver(d, "a@example.org", [f"b@{d}"], MESSAGE)
            wait_until(lambda: "cached connections: 0" in daemon.status())
            # The status connection just used may still be closing on the daemon's side.
            wait_until(lambda: len(os.listdir(fds)) <= before, timeout=5)
    assert len(server.received) == 31


# -- the daemon's life -----------------------------------------------------------------------


def test_killed_mid_delivery_the_client_reports_a_deferral_and_a_restart_delivers(home, zone):
    with slow_mx(zone, 3, "250 ok") as server:
        daemon = Qremoted(home).start()
        thread, result = in_background(send, home)
        wait_until(lambda: len(server.received) == 1)
        daemon.kill()
        thread.join()
    run = result["run"]
    assert run.status == 0
    assert run.output == client.LOST
    assert run.qmail.startswith(b"Z")
    with Qremoted(home), ScriptedServer(ip=server.ip) as again:
        assert send(home).output == accepted(again.ip)


def test_a_stopped_daemon_is_waited_for_never_bypassed(home, mx, qremoted):
    """A running daemon that cannot answer (stopped here; busy or at its limit in life):
    the client waits past ACCEPT_TIMEOUT instead of delivering in-process, and the
    message goes once, through the daemon, when it answers again."""
    qremoted.signal(signal.SIGSTOP)  # the kernel still queues connections for it
    try:
        thread, result = in_background(send, home)
        thread.join(client.ACCEPT_TIMEOUT + 3)
        assert thread.is_alive() and mx.received == []
    finally:
        qremoted.signal(signal.SIGCONT)
    thread.join(30)
    assert result["run"].output == accepted(mx.ip)
    assert len(mx.received) == 1
    wait_until(lambda: "delivery pid" in qremoted.log())


def test_heartbeats_keep_the_client_waiting_through_a_slow_delivery(home, zone):
    """The server takes longer to answer the dot than three heartbeat intervals."""
    with slow_mx(zone, 2) as server:
        with Qremoted(home, "--heartbeat", "0.2"):
            run = send(home)
    assert run.output == accepted(server.ip)
    assert len(server.received) == 1


def test_a_daemon_stuck_after_the_dot_is_given_up_on_as_a_deferral(home, zone):
    """Stopped after the final dot, the daemon says nothing more: the client, which said
    Y, waits as long as C said (timeoutremote, 10 s here, and the patience) and reports Z
    instead of holding qmail-send's delivery slot for good."""
    with slow_mx(zone, 5) as server:
        with Qremoted(home, "--heartbeat", "0.2", "--patience", "1") as daemon:
            thread, result = in_background(send, home)
            wait_until(lambda: len(server.received) == 1)
            daemon.signal(signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                thread.join(20)
                gave_up_after = time.monotonic() - stopped
            finally:
                daemon.signal(signal.SIGCONT)
            assert not thread.is_alive()
            run = result["run"]
            assert run.status == 0
            assert run.output == client.LOST
            assert gave_up_after < 15
            wait_until(lambda: "the client had stopped waiting" in daemon.log(), timeout=15)


def test_a_client_that_stopped_waiting_before_the_dot_gets_no_message_sent(home, zone):
    """The duplicate this rules out: a client that gave up (here: a daemon silent past
    its patience while it runs) reports a deferral, so the daemon must not send the dot
    afterwards. It asks with C just before the dot, hears nothing, and abandons."""
    with ScriptedServer(Script(greeting=Slow(3, "220 slow to greet"))) as server:
        zone.mx("example.net", (10, "mx.example.net"))
        zone.a("mx.example.net", server.ip)
        with Qremoted(home, "--heartbeat", "0.2", "--patience", "0.5") as daemon:
            thread, result = in_background(send, home)
            wait_until(lambda: bool(server.connections))
            daemon.signal(signal.SIGSTOP)  # silent while the client waits
            time.sleep(2)
            daemon.signal(signal.SIGCONT)
            thread.join(30)
            assert result["run"].output == client.NOT_SENT
            wait_until(lambda: "abandoned before the final dot" in daemon.log(), timeout=20)
    assert server.received == []


def test_killing_the_daemon_in_a_burst_loses_and_bounces_nothing(home, zone):
    """Killed with deliveries in flight, then down, then back: every delivery ends with
    one report, K only for what the server has, never D; a retry of the deferred ones
    (as qmail would) gets every message there."""
    domains = [f"d{i}.example" for i in range(18)]
    with ScriptedServer(Script(dot=Slow(2, "250 2.0.0 Ok: queued as 1234"))) as server:
        for d in domains:
            zone.mx(d, (10, "mx.burst.example"))
        zone.a("mx.burst.example", server.ip)

        def one(domain: str):
            message = MESSAGE.replace(b"Subject: hi", f"Subject: {domain}".encode())
            return home.deliver(domain, "a@example.org", [f"rcpt@{domain}"], message)

        def burst(batch: list[str]) -> list:
            return [(d, *in_background(one, d)) for d in batch]

        daemon = Qremoted(home).start()
        in_flight = burst(domains[:6])
        wait_until(lambda: len(server.received) >= 3)
        daemon.kill()
        while_down = burst(domains[6:12])
        for _, thread, _ in in_flight + while_down:
            thread.join()
        with Qremoted(home):
            after = burst(domains[12:])
            for _, thread, _ in after:
                thread.join()
        runs = {d: result["run"] for d, _, result in in_flight + while_down + after}
        assert all(r.status == 0 for r in runs.values())
        assert all(runs[d].qmail.startswith(b"K") for d in domains[6:])
        assert any(runs[d].output == client.LOST for d in domains[:6])
        assert {r.qmail[:1] for r in runs.values()} <= {b"K", b"Z"}
        subjects = {m.content.split(b"Subject: ")[1].split(b"\r\n")[0] for m in server.received}
        assert {d.encode() for d, r in runs.items() if r.qmail.startswith(b"K")} <= subjects
        deferred = [d for d, r in runs.items() if r.qmail.startswith(b"Z")]
        assert all(one(d).qmail.startswith(b"K") for d in deferred)  # qmail's retry
        subjects = {m.content.split(b"Subject: ")[1].split(b"\r\n")[0] for m in server.received}
    assert subjects == {d.encode() for d in domains}


def test_more_clients_than_the_daemon_takes_queue_and_each_message_goes_once(home, zone):
    """Overload, made cheap: the daemon takes 6 clients at once and delivers 3 at a time;
    40 come at once. The rest queue in the socket's backlog and for a turn: every one is
    K, every message arrives exactly once, and every one went through the daemon (no
    in-process fallback while it runs)."""
    domains = [f"o{i}.example" for i in range(40)]
    with one_mx_for(zone, domains, 0.3) as server:
        with Qremoted(home, "--clients", "6", "--deliveries", "3") as daemon:
            started = [in_background(one_to, home, d) for d in domains]
            for thread, _ in started:
                thread.join(120)
            runs = [result["run"] for _, result in started]
            # Every one through the daemon (its line comes just after the report).
            wait_until(lambda: daemon.log().count("delivery pid") == len(domains))
    assert all(r.qmail.startswith(b"K") for r in runs), [r.qmail for r in runs]
    subjects = sorted(m.content.split(b"Subject: ")[1].split(b"\r\n")[0] for m in server.received)
    assert subjects == sorted(d.encode() for d in domains)


def test_sigterm_lets_in_flight_deliveries_finish_within_the_grace(home, zone):
    with slow_mx(zone, 1) as server:
        daemon = Qremoted(home, "--grace", "20").start()
        thread, result = in_background(send, home)
        wait_until(lambda: "1 in flight" in (daemon.status() or ""))
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        thread.join()
    assert result["run"].output == accepted(server.ip)
    assert not os.path.exists(os.path.join(home.path, "qremote", "qremoted.sock"))
    assert "stopped after 1 deliveries" in daemon.log()


def test_sigterm_hands_back_what_outlasts_the_grace_as_a_deferral(home, zone):
    with slow_mx(zone, 8, "250 ok") as server:
        daemon = Qremoted(home, "--grace", "0.5").start()
        thread, result = in_background(send, home)
        wait_until(lambda: len(server.received) == 1)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        thread.join()
    run = result["run"]
    assert run.status == 0
    assert run.output.startswith(b"Zqremoted was stopped during the delivery")
    assert run.qmail.startswith(b"Z")


def test_a_second_daemon_for_the_same_home_refuses_to_start(home, qremoted):
    second = home.qremote("daemon")
    assert second.returncode == 1
    assert second.stderr == f"qremote daemon: another qremoted is running for {home.path}\n"
    assert qremoted.status() is not None


def test_status_shows_in_flight_deliveries_and_cached_connections(home, zone, qremoted):
    with slow_mx(zone, 4, "250 ok") as server:
        thread, _ = in_background(send, home)
        wait_until(lambda: len(server.received) == 1)
        busy = home.qremote("status").stdout
        thread.join()
        idle = home.qremote("status").stdout
    assert "1 in flight" in busy
    assert "to example.net from <a@example.org>, 1 recipients" in busy
    assert "cached connections: 1" in idle
    assert f"{server.ip}:25 from any group" in idle


def test_status_says_when_the_daemon_is_not_running(home):
    out = home.qremote("status").stdout
    assert "qremoted (qremote/qremoted.sock):\n  not running" in out


def test_a_client_speaking_nonsense_is_dropped_and_the_daemon_serves_on(home, mx, qremoted):
    import socket

    for junk in (b"GET / HTTP/1.0\r\n\r\n", b"D\0\0", b""):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(os.path.join(home.path, "qremote", "qremoted.sock"))
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""
    assert logged(qremoted, "dropped pid", 3).count("dropped pid") == 3
    assert send(home).output == accepted(mx.ip)


def test_a_pipe_on_stdin_is_left_to_the_client(home, mx, qremoted):
    """The daemon reads the queue file at its own pace without moving its offset; a pipe
    allows neither, so the client delivers it itself."""
    proc = subprocess.run(
        [home.program, "example.net", "a@example.org", "b@example.net"],
        input=MESSAGE,
        capture_output=True,
        cwd=home.path,
        env={},
        timeout=60,
    )
    assert proc.stdout == accepted(mx.ip)
    logged(qremoted, "stdin is not a regular file")


def test_sign_only_mode_is_left_to_the_client(home, mx, qremoted):
    home.write("signonly", "")
    orig = home.program + ".orig"
    with open(orig, "w") as f:
        f.write("#!/bin/sh\ncat > /dev/null\nprintf 'Korig ran.\\n\\0'\n")
    os.chmod(orig, 0o755)
    run = send(home)
    assert run.output == b"Korig ran.\n\0"
    logged(qremoted, "refused pid .*sign-only mode")


# -- who may talk to it ----------------------------------------------------------------------

PROBE = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect:", e.strerror)
    sys.exit()
try:
    s.sendall(b"S\0\0\0\0")
except BrokenPipeError:
    pass  # a refusal may come before the request is read: it is still there to read
print("answer:", s.recv(100))
"""


def as_nobody(path: str) -> str:
    return subprocess.run(
        ["/usr/bin/python3", "-I", "-c", PROBE, path],
        user="nobody",
        group="nogroup",
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


@pytest.fixture
def open_home(dns_server, zone):
    """A qmail home every user can walk into, so only the socket's own mode and the
    daemon's peer check stand between ``nobody`` and qremoted."""
    top = tempfile.mkdtemp(prefix="qremote-open-", dir="/tmp")
    os.chmod(top, 0o755)
    home = qmailhome.make(os.path.join(top, "qmail"), dns_server.address)
    os.chmod(home.path, 0o755)
    with Qremoted(home) as daemon:
        os.chmod(os.path.join(home.path, "qremote"), 0o755)
        yield home, daemon
    shutil.rmtree(top)


def test_the_socket_is_0600_so_other_users_cannot_even_connect(open_home):
    home, _ = open_home
    path = os.path.join(home.path, "qremote", "qremoted.sock")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert as_nobody(path) == "connect: Permission denied\n"


def test_a_user_other_than_qmailr_or_root_is_refused_by_peer_credentials(open_home):
    home, daemon = open_home
    path = os.path.join(home.path, "qremote", "qremoted.sock")
    os.chmod(path, 0o666)  # a careless admin: the kernel's answer still decides
    said = as_nobody(path)
    assert said == f"answer: {wire.frame(wire.REFUSED, b'not allowed')!r}\n"
    logged(daemon, r"refused pid \d+: uid \d+ may not use qremoted")


# -- a daemon that breaks: what the thin client does -----------------------------------------


class BrokenDaemon:
    """Listens on qremoted's socket and answers every client with ``answer`` bytes (after
    reading its request), then, after ``hold`` seconds, ``then`` bytes, and closes: a
    stand-in for a daemon that dies, stalls or misbehaves."""

    def __init__(
        self, home, answer: bytes, hold: float = 0.0, then: bytes = b"", alive: bool = False
    ) -> None:
        import fcntl
        import socket

        self.answer, self.hold, self.then = answer, hold, then
        self.requests: list[bytes] = []
        path = os.path.join(home.path, "qremote", "qremoted.sock")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.alive = None
        if alive:  # as a running qremoted: its alive file locked
            self.alive = os.open(
                os.path.join(home.path, "qremote", "qremoted.alive"), os.O_RDWR | os.O_CREAT, 0o600
            )
            fcntl.flock(self.alive, fcntl.LOCK_EX)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data, _, _, _ = conn.recvmsg(1 << 16, 64)
                self.requests.append(data)
                conn.sendall(self.answer)
                time.sleep(self.hold)
                try:
                    conn.sendall(self.then)
                except OSError:
                    pass  # the client gave up and left

    def close(self) -> None:
        self.sock.close()
        if self.alive is not None:
            os.close(self.alive)


def send_through_broken(
    home, answer: bytes, hold: float = 0.0, then: bytes = b"", alive: bool = False
):
    """One delivery with a :class:`BrokenDaemon` on the socket: (the run, the daemon)."""
    daemon = BrokenDaemon(home, answer, hold, then, alive)
    try:
        return send(home), daemon
    finally:
        daemon.close()


@pytest.mark.parametrize(
    "answer",
    [b"", b"garbage that is not a frame", wire.frame(wire.REFUSED, b"busy")],
    ids=["closes at once", "speaks garbage", "refuses"],
)
def test_before_the_daemon_takes_a_delivery_the_client_delivers_in_process(home, mx, answer):
    run, daemon = send_through_broken(home, answer)
    args = b"example.net\0a@example.org\0b@example.net"
    assert daemon.requests == [wire.frame(wire.DELIVER_COMMITTED, args)]
    assert run.output == accepted(mx.ip)
    assert len(mx.received) == 1


BROKEN_ANSWERS = [
    b"",
    wire.frame(wire.REPORT, b""),
    wire.frame(wire.REPORT, b"no letter, no NUL"),
    b"R\0\0\0\x10r\0Khalf",
]
BROKEN_IDS = ["dies", "empty report", "malformed report", "report cut short"]


@pytest.mark.parametrize("then", BROKEN_ANSWERS, ids=BROKEN_IDS)
def test_accepted_but_not_committed_by_a_daemon_that_is_gone_is_delivered_here(home, mx, then):
    """The daemon never sends the dot before the client's Y: nothing can have left, and
    with no daemon running the client delivers the message itself."""
    run, _ = send_through_broken(home, wire.frame(wire.ACCEPTED, b"20") + then)
    assert run.output == accepted(mx.ip)
    assert len(mx.received) == 1


@pytest.mark.parametrize("then", BROKEN_ANSWERS, ids=BROKEN_IDS)
def test_after_the_commit_a_broken_answer_is_a_deferral(home, mx, then):
    answer = wire.frame(wire.ACCEPTED, b"20") + wire.frame(wire.COMMIT, b"30")
    run, _ = send_through_broken(home, answer, hold=0.3, then=then)  # it has our Y by then
    assert run.status == 0
    assert run.output == client.LOST
    assert run.qmail == b"Z" + client.LOST[1:-1]
    assert mx.received == []


def test_a_running_daemon_that_drops_the_request_is_asked_again_never_bypassed(home, mx):
    run, daemon = send_through_broken(home, wire.frame(wire.ACCEPTED, b"20"), alive=True)
    assert run.output == client.NOT_SENT
    assert len(daemon.requests) == client.RECONNECTS + 1
    assert mx.received == []


@pytest.mark.parametrize(
    "promise, hold, expected",
    [
        (b"0.2 1", 3.0, "deferral"),
        (b"0.2", 1.5, "report"),
        (b"", 1.5, "report"),
    ],
    ids=[
        "silent past the patience it named",
        "silent but running: waited for",
        "an older daemon that promises no heartbeat",
    ],
)
def test_silence_from_a_running_daemon_is_borne_for_its_patience(home, mx, promise, hold, expected):
    report = b"r\0Kdone elsewhere\n\0"
    run, _ = send_through_broken(
        home,
        wire.frame(wire.ACCEPTED, promise),
        hold=hold,
        then=wire.frame(wire.REPORT, report),
        alive=True,
    )
    assert run.status == 0
    assert run.output == (client.NOT_SENT if expected == "deferral" else report)
    assert mx.received == []


def test_heartbeats_between_accepting_and_the_report_are_passed_over(home, mx):
    report = b"r\0Kdone elsewhere\n\0"
    beats = wire.frame(wire.WORKING) * 3
    answer = wire.frame(wire.ACCEPTED, b"0.2") + beats
    then = beats + wire.frame(wire.REPORT, report)
    run, _ = send_through_broken(home, answer, hold=0.3, then=then)
    assert run.output == report


# -- a hostile MX among the others -------------------------------------------------------


def _peak_memory_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_hostile_mx_neither_stalls_nor_endangers_other_deliveries(home, mx, qremoted):
    """One delivery stalls on a silent MX and three hit a flooding one, all inside the
    same qremoted as five ordinary deliveries: those five finish while the stalled one
    still waits, every report is what it would be alone, and the daemon's peak memory
    stays bounded (an unbounded reply took a process to 1 GB in 5 s)."""
    from tests.support.hostile import HostileServer, Step

    flood = b"250-" + b"x" * 2000 + b"\r\n"
    with (
        HostileServer({"EHLO": Step((flood,), "flood", flood=flood)}) as flooding,
        HostileServer({"MAIL": Step((), "stall")}) as silent,
    ):
        stalled = in_background(home.deliver, f"[{silent.ip}]", "a@example.org", ["b@x"], MESSAGE)
        floods = [
            in_background(home.deliver, f"[{flooding.ip}]", "a@example.org", ["b@x"], MESSAGE)
            for _ in range(3)
        ]
        ordinary = [send(home) for _ in range(5)]
        assert stalled[0].is_alive()  # the five went by while it still waited
        for thread, _ in floods:
            thread.join(60)
        stalled[0].join(60)
    assert [run.output[:3] for run in ordinary] == [b"r\0K"] * 5
    for _, result in floods:
        assert result["run"].output == (
            b"ZConnected to " + flooding.ip.encode() + b" but it sent a reply of more than "
            b"65536 bytes. (#4.5.0)\n" + UNSIGNED + b"\0"
        )
    assert stalled[1]["run"].output.startswith(
        b"ZConnected to " + silent.ip.encode() + b" but connection died."
    )
    assert qremoted.proc is not None
    assert _peak_memory_kb(qremoted.proc.pid) < 200 * 1024


# -- descriptors -----------------------------------------------------------------------------


def _limits_of(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        line = next(x for x in f if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_the_daemon_raises_its_descriptor_limit_and_says_what_room_it_has(home):
    with Qremoted(home, nofile=(256, 4096)) as daemon:
        assert _limits_of(daemon.proc.pid) == (4096, 4096)
        status = daemon.status()
        log = daemon.log()
    assert "descriptors: 4096 (hard limit 4096, raised from 256): 1332 clients at once" in log
    assert "descriptors: 4096 (hard limit 4096): room for 1332 clients at once" in status


def test_check_names_a_daemon_with_less_room_than_concurrencyremote(home):
    home.write("concurrencyremote", "500\n")
    with Qremoted(home, nofile=(1024, 1024)):
        found = [p for p in problems(home.path) if "descriptor limit" in p]
    assert found == [
        "qremoted's descriptor limit is 1024: room for 308 clients at once, but "
        "control/concurrencyremote is 500; the rest wait for it. Raise its limit to 1600 "
        "or more (LimitNOFILE= in the systemd unit, ulimit -n in the daemontools run script)"
    ]
    home.write("concurrencyremote", "300\n")
    with Qremoted(home, nofile=(1024, 1024)):
        assert not [p for p in problems(home.path) if "descriptor limit" in p]


def test_the_service_files_give_qremoted_a_high_descriptor_limit():
    from qremote.daemon import service

    assert "LimitNOFILE=262144" in service.systemd_unit()
    assert 'ulimit -n 262144 2>/dev/null || ulimit -n "$(ulimit -H -n)"' in service.run_script(
        "/var/qmail"
    )


# -- every core: workers -----------------------------------------------------------------------


def test_workers_share_the_deliveries_and_the_caps(home, zone):
    home.write("mxgroups", "*:2\n")
    domains = [f"w{i}.example" for i in range(16)]
    with one_mx_for(zone, domains, 0.4) as server:
        with Qremoted(home, "--workers", "2") as daemon:
            started = [in_background(one_to, home, d) for d in domains]
            for thread, _ in started:
                thread.join(60)
            wait_until(lambda: "worker 1: qremoted pid" in (daemon.status() or ""), timeout=10)
            status = daemon.status()
            wait_until(lambda: daemon.log().count("delivery pid") == len(domains))
            log = daemon.log()
    assert all(result["run"].qmail.startswith(b"K") for _, result in started)
    assert len(server.received) == len(domains)
    assert server.max_active <= 2  # one cap, across both workers
    assert "worker 0: delivery pid" in log and "worker 1: delivery pid" in log
    assert "worker 0: qremoted pid" in status and "worker 1: qremoted pid" in status


def test_a_worker_killed_mid_delivery_loses_nothing(home, zone):
    domains = [f"k{i}.example" for i in range(12)]
    with one_mx_for(zone, domains, 1.5) as server:
        with Qremoted(home, "--workers", "2") as daemon:
            started = [(d, *in_background(one_to, home, d)) for d in domains]
            wait_until(lambda: len(server.received) >= 2)
            victim = int(re.search(r"worker 0: qremoted pid (\d+)", daemon.status()).group(1))
            os.kill(victim, signal.SIGKILL)
            for _, thread, _ in started:
                thread.join(60)
            runs = {d: result["run"] for d, _, result in started}
            assert {r.qmail[:1] for r in runs.values()} <= {b"K", b"Z"}  # never a bounce
            wait_until(lambda: "ended (killed by signal 9); starting it again" in daemon.log())
            for d, run in runs.items():  # qmail's retry of the deferred ones
                if run.qmail.startswith(b"Z"):
                    assert run.output == client.LOST, run.output
                    assert one_to(home, d).qmail.startswith(b"K")
    subjects = {m.content.split(b"Subject: ")[1].split(b"\r\n")[0] for m in server.received}
    assert subjects == {d.encode() for d in domains}


def test_a_worker_closes_its_idle_connection_for_a_sibling_waiting_for_its_slot(home, zone):
    """The group's one slot is held by whichever connection was kept last, in whichever
    worker served it; a delivery to the other server of the group gets the slot within
    mxgroupwait whichever worker it lands on (the holder closes its idle connection)."""
    one, two = two_servers_in_one_group(home, zone, limit=1)
    home.write("mxgroupwait", "20\n")  # shorter than reuseidle: waiting it out would be Z
    runs = []
    with one, two, Qremoted(home, "--workers", "2") as daemon:
        for turn in range(40):
            runs.append(to(home, ("d1.example", "d2.example")[turn % 2]))
            log = logged(daemon, "delivery pid", len(runs))
            if turn >= 3 and "worker 0: delivery pid" in log and "worker 1: delivery pid" in log:
                break
    assert "worker 0: delivery pid" in log and "worker 1: delivery pid" in log
    assert [r.qmail[:1] for r in runs] == [b"K"] * len(runs)
    assert len(one.received) + len(two.received) == len(runs)
