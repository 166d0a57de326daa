"""The verifying daemon (``qremote verifyd``) and the thin filter in front of it: who may
use it, what it may read, and that no failure of the daemon loses a message, queues one
twice, or lets one message's slow DNS hold up another. The verdicts themselves are
test_dkimverify's and test_verdicts', which run through both paths."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from qremote.signing.keys import KeyStore
from qremote.signing.sign import SignConfig, sign_message
from qremote.verify import status, wire
from tests.support import keys, qmailhome
from tests.support.queue import StandInQueue
from tests.support.verifyd import NOBODY, Verifyd, build_filter
from tests.test_dkimverify import ENVELOPE, MSG, ar_of, results

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing users takes root (CI is root)")


@pytest.fixture(scope="module")
def thin_filter(tmp_path_factory):
    return build_filter(str(tmp_path_factory.mktemp("thinfilter")))


@pytest.fixture
def site(dns_server, zone):
    """A receiving site the daemon's user can read, and a sender (example.com, s1)."""
    top = tempfile.mkdtemp(prefix="qremote-verifyd-test-")
    os.chmod(top, 0o755)
    home = qmailhome.make(os.path.join(top, "qmail"), dns_server.address)
    home.write("me", "mx.example.org\n")
    sender = os.path.join(top, "sender-control")
    key = keys.write_key(sender, "example.com", "s1")
    keys.publish(zone, "example.com", "s1", key)
    home.signer = KeyStore(os.path.join(sender, "domainkeys"))
    yield home
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def queue(tmp_path, thin_filter):
    q = StandInQueue(str(tmp_path))
    q.command = [thin_filter]
    return q


def signed(site, message: bytes = MSG) -> bytes:
    done = sign_message(message, b"alice@example.com", site.signer, SignConfig(domainkeys=False))
    return done.headers + message


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1))


def as_other_user(uid: int, fn) -> str:
    """``fn()`` in a forked child that became ``uid``; its text (or the error) back."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no imports, nothing but fn
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            text = fn()
        except BaseException as e:  # noqa: BLE001
            text = f"{e.__class__.__name__}: {e}"
        os.write(write, text.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        return f.read().decode()


def ask_status(home: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(os.path.join(home, wire.SOCKET_PATH))
        try:
            sock.sendall(wire.frame(wire.STATUS))
        except BrokenPipeError:
            pass  # refused (and closed) before the request was read: its answer is here
        return sock.recv(4096)[:1].decode()


# -- who it is ---------------------------------------------------------------------------


@as_root
def test_it_runs_as_the_user_it_became_and_its_socket_is_that_users_alone(site):
    with Verifyd(site.path) as daemon:
        answer = status.ask(site.path)
        assert answer is not None and answer.uid == int(NOBODY)
        assert uid_of(daemon.proc.pid) == int(NOBODY)
        st = os.stat(os.path.join(site.path, wire.SOCKET_PATH))
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == int(NOBODY)
        # Another local user cannot even connect.
        said = as_other_user(int(NOBODY) - 1, lambda: ask_status(site.path))
        assert said.startswith("PermissionError"), said


@as_root
def test_peer_credentials_refuse_another_user_even_on_an_open_socket(site):
    with Verifyd(site.path) as daemon:
        os.chmod(os.path.join(site.path, wire.SOCKET_DIR), 0o755)  # a careless admin
        os.chmod(os.path.join(site.path, wire.SOCKET_PATH), 0o666)
        said = as_other_user(int(NOBODY) - 1, lambda: ask_status(site.path))
        assert said == "N"  # refused: the kernel says who is asking
        assert ask_status(site.path) == "T"  # root is served
        assert f"uid {int(NOBODY) - 1} may not use verifyd" in daemon.log()
        check = site.qremote("check")
        assert "others can use it" in check.stdout + check.stderr


@as_root
def test_it_does_not_serve_as_root(site):
    done = site.qremote("verifyd")
    assert done.returncode != 0
    assert "does not run as root" in done.stderr


def test_it_refuses_to_start_when_it_can_read_a_signing_key(site):
    keys.write_key(site.control, "example.org", "s1", mode=0o644)  # anyone can read it
    daemon = Verifyd(site.path)
    with pytest.raises(RuntimeError, match="can read the signing key .*example.org"):
        daemon.start()
    assert daemon.proc.wait(30) != 0


@as_root
def test_check_names_a_running_verifyd_that_can_read_a_key(site):
    with Verifyd(site.path):
        keys.write_key(site.control, "example.org", "s1", mode=0o644)
        key = os.path.join(site.control, "domainkeys", "example.org", "s1.pem")
        check = site.qremote("check")
    out = check.stdout + check.stderr
    assert f"verifyd runs as uid {NOBODY}, which can read {key}" in out, out


def test_check_says_when_no_verifyd_answers_on_its_socket(site):
    daemon = Verifyd(site.path).start()
    daemon.stop(signal.SIGKILL)  # the socket stays behind
    check = site.qremote("check")
    assert "no verifyd answers" in check.stdout + check.stderr


# -- nothing lost, nothing twice ----------------------------------------------------------


def test_without_a_daemon_the_filter_verifies_in_process(site, queue):
    q = queue.run(site.path, signed(site), ENVELOPE)
    assert q.status == 0, q.log
    assert results(q) == ["dkim=pass"] and queue.runs == 1


def test_without_a_daemon_it_can_pass_mail_on_unverified_when_told_to(site, queue):
    site.write("dkimverifyfallback", "pass\n")
    forged = b"Authentication-Results: mx.example.org; dkim=pass header.d=bank.example\n"
    q = queue.run(site.path, forged + MSG, ENVELOPE)
    assert q.status == 0 and queue.runs == 1
    assert q.message == (
        b"Authentication-Results: mx.example.org; none (not verified: no verifying daemon)\n"
        b"X-Original-" + forged + MSG
    )
    assert "passed on, as control/dkimverifyfallback says" in q.log


def test_the_daemon_killed_mid_message_loses_nothing_and_queues_once(site, zone, queue):
    hold = zone.held["s1._domainkey.example.com"] = threading.Event()
    daemon = Verifyd(site.path).start()
    proc = queue.start(site.path, signed(site), ENVELOPE)
    assert zone.wait_for_query("s1._domainkey.example.com")
    daemon.stop(signal.SIGKILL)  # in the middle of its DNS look-up
    hold.set()
    q = queue.result(proc)
    assert q.status == 0, q.log
    assert queue.runs == 1
    assert results(q) == ["dkim=pass"]  # verified again, in-process


def test_a_daemon_that_refuses_means_in_process(site, queue):
    with Verifyd(site.path):
        # A request without a message is refused; the daemon goes on serving.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(os.path.join(site.path, wire.SOCKET_PATH))
            sock.sendall(wire.frame(wire.VERIFY, b"12"))
            assert sock.recv(100)[:1] == wire.REFUSED
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(os.path.join(site.path, wire.SOCKET_PATH))
            sock.sendall(b"garbage that is no frame")
            assert sock.recv(100) == b""
        q = queue.run(site.path, signed(site), ENVELOPE)
    assert q.status == 0 and results(q) == ["dkim=pass"] and queue.runs == 1


def test_a_slow_dns_answer_holds_up_no_other_message(site, zone, tmp_path, thin_filter):
    slow_key = keys.write_key(os.path.join(site.path, "slow-control"), "slow.example", "s1")
    keys.publish(zone, "slow.example", "s1", slow_key)
    slow_signer = KeyStore(os.path.join(site.path, "slow-control", "domainkeys"))
    slow_msg = MSG.replace(b"alice@example.com", b"alice@slow.example")
    slow = sign_message(slow_msg, b"alice@slow.example", slow_signer, SignConfig(domainkeys=False))
    hold = zone.held["s1._domainkey.slow.example"] = threading.Event()
    slow_queue = StandInQueue(str(tmp_path / "slow"))
    slow_queue.command = [thin_filter]
    with Verifyd(site.path):
        waiting = slow_queue.start(site.path, slow.headers + slow_msg, ENVELOPE)
        assert zone.wait_for_query("s1._domainkey.slow.example")
        for n in range(5):
            fast = StandInQueue(str(tmp_path / f"fast{n}"))
            fast.command = [thin_filter]
            q = fast.run(site.path, signed(site), ENVELOPE)
            assert q.status == 0 and results(q) == ["dkim=pass"]
        assert waiting.poll() is None  # still waiting for its key
        hold.set()
        q = slow_queue.result(waiting)
    assert q.status == 0 and results(q) == ["dkim=pass"] and slow_queue.runs == 1


def test_memory_stays_bounded_under_a_flood_of_large_messages(site, tmp_path, thin_filter):
    """Twelve 8 MB messages at once, with room for 16 MB of messages: they are verified
    two at a time, and the daemon's peak memory stays within its stated bound (its size
    at rest, and eight times --memory: a message in hand costs about four times its size,
    the message, dkimpy's copy of the body, its canonical form and our parse). Without the
    bound, eight threads would hold eight messages: twice this."""
    line = b"x" * 999 + b"\n"
    big = MSG + line * 8000
    message = signed(site, big)
    with Verifyd(site.path, "--memory", "16", "--threads", "8") as daemon:
        rest = peak_memory(daemon.proc.pid)
        queues, procs = [], []
        for n in range(12):
            q = StandInQueue(str(tmp_path / f"q{n}"))
            q.command = [thin_filter]
            queues.append(q)
            procs.append(q.start(site.path, message, ENVELOPE))
        done = [q.result(p) for q, p in zip(queues, procs, strict=True)]
        peak = peak_memory(daemon.proc.pid)
    for q, d in zip(queues, done, strict=True):
        assert d.status == 0 and q.runs == 1 and d.message == ar_of(d) + message
        assert results(d) == ["dkim=pass"]
    assert peak - rest <= 8 * 16 << 20, (rest, peak)


def peak_memory(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def test_sighup_reads_the_settings_again(site, queue):
    with Verifyd(site.path) as daemon:
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "SIGHUP" not in daemon.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        site.write("authservid", "verify.example.org\n")
        q = queue.run(site.path, MSG, ENVELOPE)
    assert q.message.startswith(b"Authentication-Results: verify.example.org;\n")


# -- the warm-up -------------------------------------------------------------------------

WARM_UP_PROBE = """
import os, sys
from qremote.verify.warmup import warm_up
warm_up(metrics=True)
before = set(sys.modules)
from qremote.fdutil import memory_file
from qremote.verify.build import Settings, build
from qremote.verify.txt import TxtLookup
settings = Settings.load(sys.argv[1])
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    fd = memory_file("probe", data)
    out = build(settings, fd, len(data), TxtLookup(settings.servers, 10)).out
    print(os.pread(out, 300, 0).decode().split(chr(10))[1])
from qremote.metrics.counts import VERIFY_SERIES, Counts
from qremote.metrics.exposition import render
render(Counts(), VERIFY_SERIES)  # a scrape, for a verifyd with --metrics
print(sorted(set(sys.modules) - before))
"""


def test_after_the_warm_up_verifying_mail_imports_nothing(site, zone, tmp_path):
    """What verifyd needs is loaded before it drops root: real mail of every kind then
    loads no module (a user who cannot read the interpreter's files could not)."""
    sender = os.path.join(site.path, "idn-control")
    ed = keys.write_key(sender, "exämple.de", "e1", "ed25519", "ed25519")
    rsa = keys.write_key(sender, "exämple.de", "s1")
    keys.publish(zone, "xn--exmple-cua.de", "e1", ed)
    keys.publish(zone, "xn--exmple-cua.de", "s1", rsa)
    idn = "From: Jörg <joerg@exämple.de>\nSubject: Grüße\n\nHallo.\n".encode()
    store = KeyStore(os.path.join(sender, "domainkeys"))
    messages = {
        "idn": sign_message(idn, "joerg@exämple.de".encode(), store, SignConfig()),
        "plain": sign_message(MSG, b"alice@example.com", site.signer, SignConfig()),
    }
    paths = []
    for name, done in messages.items():
        path = tmp_path / name
        path.write_bytes(done.headers + (idn if name == "idn" else MSG))
        paths.append(str(path))
    from tests.test_arc import seal  # an ARC chain, sealed by Mail::DKIM

    sealed = tmp_path / "arc"
    sealed.write_bytes(seal(site, zone, tmp_path))
    paths.append(str(sealed))
    missing = tmp_path / "missing"
    missing.write_bytes(
        b"DKIM-Signature: v=1; a=rsa-sha256; d=nowhere.example; s=x; h=from; bh=Zm9v; b=YmFy\n"
        + MSG
    )
    paths.append(str(missing))
    out = subprocess.run(
        [sys.executable, "-c", WARM_UP_PROBE, site.path, *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "dkim=pass" in lines[0] and "dkim=pass" in lines[1]
    assert lines[-1] == "[]", lines[-1]


# -- the key cache (no sockets) ----------------------------------------------------------


def test_the_key_cache_keeps_answers_for_their_ttl_and_never_failures(monkeypatch):
    from qremote.verify import dnscache

    now = [1000.0]
    monkeypatch.setattr(dnscache.time, "monotonic", lambda: now[0])
    cache = dnscache.KeyCache()
    cache.put("s1._domainkey.example.com", b"v=DKIM1; p=abc", 300)
    cache.put("gone._domainkey.example.com", None, 60)  # a missing record, negative TTL
    cache.put("broken._domainkey.example.com", b"x", 0)  # no TTL: not kept
    assert cache.get("s1._domainkey.example.com") == (True, b"v=DKIM1; p=abc")
    assert cache.get("gone._domainkey.example.com") == (True, None)
    assert cache.get("broken._domainkey.example.com") == (False, None)
    now[0] += 61
    assert cache.get("gone._domainkey.example.com") == (False, None)
    assert cache.get("s1._domainkey.example.com")[0]
    cache.put("long._domainkey.example.com", b"k", 86400)
    now[0] += dnscache.MAX_TTL + 1  # a withdrawn key stops passing within the hour
    assert cache.get("long._domainkey.example.com") == (False, None)


def test_the_key_cache_is_bounded_in_bytes_oldest_first():
    from qremote.verify import dnscache

    cache = dnscache.KeyCache(max_bytes=3000)
    cache.put("huge.example", b"x" * (dnscache.MAX_RECORD + 1), 300)
    assert cache.get("huge.example") == (False, None)
    for n in range(5):
        cache.put(f"k{n}.example", b"x" * 900, 300)
    assert len(cache) == 3  # 3 x 910 bytes fit in 3000
    assert cache.get("k0.example") == (False, None) and cache.get("k4.example")[0]


def test_a_message_whose_keys_are_kept_makes_no_resolver_and_a_miss_asks_dns(monkeypatch):
    """The resolver is made at the first query; without resolv.conf that query is a
    temporary failure (temperror), not a crash."""
    import dns.resolver

    from qremote.verify import dnscache
    from qremote.verify.txt import DnsTemporary, TxtLookup

    cache = dnscache.KeyCache()
    cache.put("s1._domainkey.example.com", b"v=DKIM1; p=abc", 300)
    lookup = TxtLookup([("127.0.0.1", 9)], 5, cache)
    assert lookup.txt("s1._domainkey.example.com") == b"v=DKIM1; p=abc"
    assert lookup.resolver is None

    def no_configuration(*_args, **_kw):
        raise dns.resolver.NoResolverConfiguration("no nameservers")

    monkeypatch.setattr(dns.resolver.Resolver, "__init__", no_configuration)
    with pytest.raises(DnsTemporary):
        TxtLookup([], 5, cache).txt("other._domainkey.example.com")


def test_a_negative_answer_is_believed_for_the_soa_minimum_or_its_ttl():
    import dns.message
    import dns.rrset

    from qremote.verify.txt import negative_ttl

    query = dns.message.make_query("x._domainkey.example.com.", "TXT")
    response = dns.message.make_response(query)
    assert negative_ttl(response) == 0  # no SOA: not kept
    response.authority.append(
        dns.rrset.from_text("example.com.", 900, "IN", "SOA", "ns. host. 1 2 3 4 120")
    )
    assert negative_ttl(response) == 120
    response.authority[0].ttl = 60
    assert negative_ttl(response) == 60


@as_root
def test_a_process_of_another_user_on_the_socket_is_not_believed(site, queue):
    """Only the owner of qremote-verifyd/ (qmail-smtpd's user) can put a socket there; an
    answer from any other process there (here root's, offering a forged verdict) is not
    a verifyd of ours: the filter verifies in-process."""
    from qremote.fdutil import memory_file

    folder = os.path.join(site.path, wire.SOCKET_DIR)
    os.makedirs(folder, mode=0o700)
    os.chown(folder, int(NOBODY), int(NOBODY))
    forged = b"Authentication-Results: mx.example.org; dkim=pass header.d=bank.example\n" + MSG
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(site.path, wire.SOCKET_PATH))
    listener.listen(1)
    answered = []

    def impostor() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recvmsg(100, socket.CMSG_SPACE(4))
            fd = memory_file("forged", forged)
            try:
                conn.sendall(wire.frame(wire.ACCEPTED, b"10"))
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, "little"))]
                conn.sendmsg([wire.frame(wire.QUEUE)], rights)
                answered.append(True)
            except OSError:
                pass  # the filter hung up first: it did not believe us
            finally:
                os.close(fd)

    thread = threading.Thread(target=impostor, daemon=True)
    thread.start()
    try:
        q = queue.run(site.path, MSG, ENVELOPE)
    finally:
        listener.close()
        thread.join(10)
    assert q.status == 0 and queue.runs == 1
    assert q.message == b"Authentication-Results: mx.example.org;\n\tdkim=none\n" + MSG
    assert "is not its folder's owner: verifying in this process" in q.log
