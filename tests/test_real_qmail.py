"""qremote inside a real qmail: notqmail built from source, qremote installed into it from
a virtualenv as README says, qremoted under daemontools (supervise, setuidgid qmailr) on
the directory `qremote install --service` wrote, mail injected with qmail-inject
and carried by qmail-send and qmail-rspawn to a loopback server.

This is the acceptance of the whole project: every message arrives signed (dkimpy and
Mail::DKIM pass), qmail-send's log carries qremote's report text, the deliveries went
through qremoted, and uninstall puts the C program back. Without notqmail's source (a
clone of the repository alone) the test says why it did not run; CI always has it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pytest

from qremote.daemon import client
from tests.support import realqmail, venv, verifiers
from tests.support.smtpserver import ScriptedServer
from tests.support.waiting import wait_until

MESSAGES = 5


@pytest.fixture(scope="module")
def qmail_home():
    reason = realqmail.missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the real-qmail test: {reason}")
        pytest.skip(reason)
    top = realqmail.make_top()
    try:
        yield realqmail.build(top)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def installed():
    yield from venv.installed()


def _run(installed: str, home: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(installed, "bin", "qremote"), *args],
        env={"QMAILHOME": home, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


def _publish(zone, printed: str) -> None:
    owner = re.search(r"^(\S+)\s+\d+\s+IN\s+TXT", printed, re.M).group(1)
    strings = re.findall(r'"([^"]*)"', printed)
    zone.add(owner.rstrip("."), "TXT", " ".join(f'"{s}"' for s in strings))


def test_real_qmail_sends_signed_mail_through_qremote(qmail_home, installed, zone, dns_server):
    home = qmail_home
    control = os.path.join(home, "control")
    original = open(os.path.join(home, "bin", "qmail-remote"), "rb").read()

    service = os.path.join(home, "supervise", "qremoted")
    done = _run(installed, home, "install", "--service", service)  # checked as qmailr
    assert done.returncode == 0, done.stderr
    assert "the compiled thin client (built with " in done.stdout, done.stdout
    done = _run(installed, home, "keys", "new", "example.com", "--selector", "real")
    assert done.returncode == 0, done.stderr
    assert "it is ACTIVE now" in done.stdout
    _publish(zone, done.stdout)

    with ScriptedServer() as sink:
        with open(os.path.join(control, "smtproutes"), "w") as f:
            f.write(f"example.net:{sink.ip}\n")
        with open(os.path.join(control, "nameservers"), "w") as f:
            f.write(dns_server.address + "\n")
        # qremoted as README runs it: daemontools' supervise on the directory install wrote.
        daemon_log = open(os.path.join(home, "qremoted.log"), "wb")  # noqa: SIM115
        daemon = subprocess.Popen(
            ["supervise", service],
            env={"PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
            stdout=daemon_log,
            stderr=daemon_log,
        )
        send_log = open(os.path.join(home, "qmail-send.log"), "wb")  # noqa: SIM115
        send = None
        try:
            wait_until(lambda: client.status(home) is not None, 30)
            check = _run(installed, home, "check")
            assert check.returncode == 0, check.stdout
            send = realqmail.start_send(home, send_log)
            for n in range(MESSAGES):
                message = (
                    f"From: Alice <alice@example.com>\nTo: bob@example.net\n"
                    f"Subject: real qmail {n}\n\nMessage {n} through qmail-send.\n"
                ).encode()
                subprocess.run(
                    [os.path.join(home, "bin", "qmail-inject"), "-f", "alice@example.com",
                     "bob@example.net"],
                    input=message,
                    check=True,
                    env={"PATH": "/usr/bin:/bin"},
                )
            try:
                wait_until(lambda: len(sink.received) >= MESSAGES, 90)
                wait_until(lambda: _log(home, "qmail-send.log").count("success:") >= MESSAGES, 30)
            except AssertionError:
                raise AssertionError(_logs(home)) from None
        finally:
            if send is not None:
                send.send_signal(signal.SIGTERM)
                send.wait(60)
            subprocess.run(["svc", "-dx", service], check=False)
            daemon.wait(60)
            daemon_log.close()
            send_log.close()

    for received in sink.received:
        assert received.rcpt_tos == ["bob@example.net"]
        assert verifiers.dkimpy(received.content, dns_server.ip, dns_server.port) == [True]
        perl = verifiers.mail_dkim(received.content, dns_server.ip, dns_server.port)
        assert sorted((kind, detail) for kind, _, _, detail in perl) == [
            ("dkim", "pass"),
            ("domainkeys", "pass"),
        ], perl
    sent_log = _log(home, "qmail-send.log")
    successes = [line for line in sent_log.splitlines() if " success: " in line]
    assert len(successes) == MESSAGES
    for line in successes:
        assert f"{sink.ip}_accepted_message./Remote_host_said:_250_2.0.0_Ok:" in line
        assert "Signed:_DKIM_d=example.com_s=real_rsa-sha256;_DomainKeys_d=example.com" in line
    assert _log(home, "qremoted.log").count("delivery pid") == MESSAGES
    assert "running as root" not in _log(home, "qremoted.log")  # setuidgid made it qmailr

    done = _run(installed, home, "uninstall")
    assert done.returncode == 0, done.stderr
    assert open(os.path.join(home, "bin", "qmail-remote"), "rb").read() == original


def _log(home: str, name: str) -> str:
    with open(os.path.join(home, name), "rb") as f:
        return f.read().decode("utf-8", "replace")


def _logs(home: str) -> str:
    return _log(home, "qmail-send.log") + "\n---\n" + _log(home, "qremoted.log")




def test_real_qmail_smtpd_verifies_incoming_mail_through_verifyd(
    qmail_home, installed, zone, dns_server, tmp_path
):
    """Incoming: notqmail's qmail-smtpd under tcpserver (as qmaild) with QMAILQUEUE set to
    the installed thin filter, the verifying daemon under supervise on the directory
    install wrote; mail signed by Mail::DKIM and by dkimpy arrives over SMTP and is queued
    with our Authentication-Results field, verified by the daemon."""
    import pwd
    import smtplib

    import dkim
    from cryptography.hazmat.primitives import serialization

    from qremote.verify import status
    from tests.support import keys
    from tests.support.ports import wait_for_port

    home = qmail_home
    service = os.path.join(home, "supervise", "qremote-verifyd")
    done = _run(installed, home, "install", "--verifyd-service", service)
    assert done.returncode == 0, done.stderr
    assert "qremote-dkimverify: the compiled filter (built with " in done.stdout, done.stdout
    with open(os.path.join(home, "control", "nameservers"), "w") as f:
        f.write(dns_server.address + "\n")
    with open(os.path.join(home, "control", "rcpthosts"), "w") as f:
        f.write("me.example.org\n")
    key = keys.write_key(str(tmp_path / "sender"), "example.com", "s1")
    keys.publish(zone, "example.com", "s1", key)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (tmp_path / "key.pem").write_bytes(pem)
    message = (
        b"From: Alice <alice@example.com>\r\nTo: postmaster@me.example.org\r\n"
        b"Subject: incoming\r\n\r\nHello through qmail-smtpd.\r\n"
    )
    by_perl = subprocess.run(
        ["perl", os.path.join(os.path.dirname(__file__), "support", "sign_dkim.pl"),
         str(tmp_path / "key.pem"), "example.com", "s1"],
        input=message.replace(b"\r\n", b"\n"), capture_output=True, check=True,
    ).stdout.replace(b"\n", b"\r\n")  # fmt: skip
    by_dkimpy = dkim.sign(message, b"s1", b"example.com", pem) + message

    qmaild = pwd.getpwnam("qmaild")
    ip, port = "127.3.250.25", 25
    daemon = subprocess.Popen(
        ["supervise", service], env={"PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    smtpd_log = open(os.path.join(home, "qmail-smtpd.log"), "wb")  # noqa: SIM115
    smtpd = subprocess.Popen(
        ["tcpserver", "-R", "-H", "-l", "me.example.org", "-u", str(qmaild.pw_uid),
         "-g", str(qmaild.pw_gid), ip, str(port),
         "env", f"QMAILQUEUE={home}/bin/qremote-dkimverify", f"{home}/bin/qmail-smtpd"],
        env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
        stdout=smtpd_log, stderr=smtpd_log,
    )  # fmt: skip
    try:
        wait_until(lambda: status.ask(home) is not None, 60)
        wait_for_port(ip, port, "qmail-smtpd")
        for content in (by_perl, by_dkimpy):
            with smtplib.SMTP(ip, port, timeout=60) as smtp:
                refused = smtp.sendmail("alice@example.com", ["postmaster@me.example.org"], content)
                assert refused == {}
        said = status.ask(home)
        # Without the daemon (stopped as an administrator would), mail is still verified:
        # the filter's Python path, with the home install wrote into it (qmail-smtpd's
        # environment has no QMAILHOME).
        subprocess.run(["svc", "-d", service], check=True)
        wait_until(lambda: status.ask(home) is None, 60)
        with smtplib.SMTP(ip, port, timeout=60) as smtp:
            refused = smtp.sendmail("alice@example.com", ["postmaster@me.example.org"], by_dkimpy)
            assert refused == {}
    finally:
        smtpd.terminate()
        smtpd.wait(30)
        subprocess.run(["svc", "-dx", service], check=False)
        daemon.wait(60)
        smtpd_log.close()

    assert said is not None and said.uid == qmaild.pw_uid and "2 verified" in said.text, said
    queued = []
    for folder, _dirs, files in os.walk(os.path.join(home, "queue", "mess")):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                queued.append(f.read())
    assert len(queued) == 3, _log(home, "qmail-smtpd.log")
    for content in queued:
        head = content.split(b"\n\n", 1)[0].decode()
        assert head.startswith("Received: "), head  # qmail-queue's own line comes first
        assert "Authentication-Results: me.example.org;\n\tdkim=pass header.d=example.com" in head
    assert any("domainkeys=pass" in c.decode() for c in queued)  # Mail::DKIM's DomainKeys
    smtpd_log = _log(home, "qmail-smtpd.log")
    assert smtpd_log.count("no verifying daemon: verifying in this process") == 1, smtpd_log
