"""qremote as an administrator installs it (README): a virtualenv of /usr/bin/python3,
``pip install`` without the test extra. Everything the package imports at run time must
come with it: the verify filter verifies and a delivery with ``sharedstate`` set is
capped through Redis, not deferred."""

from __future__ import annotations

import os
import subprocess

import pytest

from qremote.signing.keys import KeyStore
from qremote.signing.sign import sign_message
from tests.support import keys, rspawn, venv
from tests.support.queue import StandInQueue
from tests.support.redisserver import RedisServer
from tests.support.smtpserver import ScriptedServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installs into /tmp as root")

MSG = b"From: alice@example.com\nTo: bob@example.net\nSubject: hi\n\nHello.\n"


@pytest.fixture(scope="module")
def installed():
    yield from venv.installed()


def test_installed_filter_verifies(installed, home, zone, tmp_path):
    home.write("me", "mx.example.org\n")
    sender = os.path.join(home.path, "sender")
    keys.publish(zone, "example.com", "s1", keys.write_key(sender, "example.com", "s1"))
    signed = sign_message(MSG, b"alice@example.com", KeyStore(os.path.join(sender, "domainkeys")))
    queue = StandInQueue(str(tmp_path))
    queue.command = [os.path.join(installed, "bin", "qremote-dkimverify")]
    q = queue.run(home.path, signed.headers + MSG, b"Fa@b\0Tc@d\0\0")
    assert q.status == 0, q.log
    assert q.log == ""
    assert b"dkim=pass header.d=example.com" in q.message


def _install_into(home, installed: str) -> None:
    """qmail's own program in place, then the installed package's ``qremote install``."""
    with open(home.program, "wb") as f:
        f.write(b"#!/bin/sh\nexit 0\n")
    done = _qremote(installed, home, "install", "--user", "root")
    assert done.returncode == 0, done.stderr
    program = home.program + ".python"  # the compiled client's Python path, when compiled
    with open(program if os.path.exists(program) else home.program) as f:
        assert installed in f.read()  # the client runs the installed package


def _qremote(installed: str, home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(installed, "bin", "qremote"), *args],
        env={"QMAILHOME": home.path, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


def test_installed_delivery_with_shared_state_uses_redis(installed, home):
    _install_into(home, installed)
    with RedisServer() as redis, ScriptedServer() as mx:
        home.write("sharedstate", redis.url + "\n")
        home.write("mxgroups", "*:5\n")
        run = rspawn.run(home.program, home.path, f"[{mx.ip}]", "a@example.org", ["b@x"], MSG)
    assert run.qmail.startswith(b"K" + mx.ip.encode() + b" accepted message."), run.output
    assert b"Shared state" not in run.output  # Redis answered: no fallback note


@pytest.fixture(scope="module")
def without_redis():
    """An installation whose redis-py went missing (removed by hand, a broken upgrade)."""
    for path in venv.installed():
        pip = os.path.join(path, "bin", "pip")
        subprocess.run([pip, "uninstall", "-q", "-y", "redis"], check=True)
        yield path


def test_missing_redis_library_degrades_to_local_caps_and_check_names_it(without_redis, home):
    _install_into(home, without_redis)
    home.write("sharedstate", "redis://127.0.0.1:9/0\n")
    with ScriptedServer() as mx:
        run = rspawn.run(home.program, home.path, f"[{mx.ip}]", "a@example.org", ["b@x"], MSG)
    assert run.qmail.startswith(b"K" + mx.ip.encode() + b" accepted message."), run.output
    assert (
        b"Shared state redis://127.0.0.1:9/0 unusable (redis-py cannot be loaded: "
        b"ModuleNotFoundError: No module named 'redis'); local MX-group caps used.\n"
    ) in run.output
    status = _qremote(without_redis, home, "status")
    assert status.returncode == 0, status.stderr
    assert "unusable: redis-py cannot be loaded" in status.stdout
    check = _qremote(without_redis, home, "check", "--user", "root")
    assert check.returncode == 1
    assert "control/sharedstate: redis-py cannot be loaded" in check.stdout


def test_installed_commands_answer(installed):
    done = subprocess.run(
        [os.path.join(installed, "bin", "qremote"), "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("qremote ")


def test_installed_qremoted_serves_metrics(installed, home):
    """prometheus_client comes with the package: an installed qremoted with --metrics
    starts and answers a scrape."""
    import time
    import urllib.request

    from tests.support.smtpserver import fresh_ip

    _install_into(home, installed)
    where = f"{fresh_ip()}:9716"
    daemon = subprocess.Popen(
        [os.path.join(installed, "bin", "qremote"), "daemon", "--metrics", where],
        env={"QMAILHOME": home.path, "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline, text = time.monotonic() + 30, ""
        while time.monotonic() < deadline and not text:
            try:
                with urllib.request.urlopen(f"http://{where}/metrics", timeout=5) as answer:
                    text = answer.read().decode()
            except OSError:
                assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
                time.sleep(0.2)
        assert "qremote_start_time_seconds" in text
    finally:
        daemon.kill()
        daemon.wait()
