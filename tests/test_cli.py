"""qmail-remote as a program: arguments, control files, the message on stdin, and the
promise that it always exits 0 with nothing but reports on its output."""

from __future__ import annotations

import os

import pytest

from qremote.cli.install import wrapper_text
from qremote.cli.qremote import parser
from tests.support import rspawn
from tests.support.smtpserver import Script, ScriptedServer

MSG = b"Subject: t\n\nbody\n"


def test_fewer_than_three_arguments_is_qmails_usage_report(home):
    for args in ([], ["example.net"], ["example.net", "a@example.org"]):
        run = rspawn.run_args(home.program, home.path, args)
        assert run.output == b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0"
        assert run.status == 0


def test_partial_final_line_bounces_without_connecting(home, zone):
    with ScriptedServer() as mx:
        zone.a("example.net", mx.ip)
        run = home.deliver("example.net", "a@example.org", ["b@example.net"], b"Subject: x\n\nno")
    assert run.output == b"DSMTP cannot transfer messages with partial final lines. (#5.6.2)\n\0"
    assert mx.connections == []


def test_missing_me_and_helohost_is_temporary(home, zone):
    home.remove("me")
    run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.output == (
        b"ZUnable to read control files. (#4.3.0)\n"
        b"control/me and control/helohost are both missing\n\0"
    )


def test_bad_timeout_names_the_file(home, zone):
    home.write("timeoutremote", "ten\n")
    run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.output == (
        b"ZUnable to read control files. (#4.3.0)\n"
        b"control/timeoutremote: 'ten' is not a whole number\n\0"
    )


def test_unreadable_control_file_is_temporary(home, zone):
    os.makedirs(os.path.join(home.control, "smtproutes"))
    run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.output.startswith(b"ZUnable to read control files. (#4.3.0)\ncontrol/smtproutes: ")


def test_bad_nameserver_line_is_named(home, zone):
    home.write("nameservers", "dns.example\n")
    run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.output == (
        b"ZUnable to read control files. (#4.3.0)\n"
        b"control/nameservers: 'dns.example' is not an IP address\n\0"
    )


def test_bad_smtproutes_port_is_named(home, zone):
    home.write("smtproutes", "example.net:relay:smtp\n")
    run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.output == (
        b"ZUnable to read control files. (#4.3.0)\n"
        b"control/smtproutes line for 'example.net': the port is not a number from 1 to "
        b"65535\n\0"
    )


def test_helohost_wins_over_me_and_size_and_8bitmime_are_declared(home, zone):
    home.write("helohost", "out.example.org\n")
    message = "Subject: cafe\n\nna\u00efve\n".encode()  # an 8-bit body (headers: see test_intl)
    with ScriptedServer(Script(extensions=["SIZE 1000000", "8BITMIME"])) as mx:
        zone.a("example.net", mx.ip)
        run = home.deliver("example.net", "a@example.org", ["b@example.net"], message)
    assert run.reports[-1].startswith(b"K")
    cmds = mx.connections[0].commands
    assert cmds[0] == "EHLO out.example.org"
    wire_size = len(message.replace(b"\n", b"\r\n")) + 3
    assert cmds[1] == f"MAIL <a@example.org> SIZE={wire_size} BODY=8BITMIME"


def test_bounce_with_empty_sender(home, zone):
    with ScriptedServer() as mx:
        zone.a("example.net", mx.ip)
        run = home.deliver("example.net", "", ["b@example.net"], MSG)
    assert run.reports[-1].startswith(b"K")
    assert mx.connections[0].commands[1].startswith("MAIL <>")


def test_large_message_arrives_intact(home, zone):
    line = b"0123456789" * 99 + b"\n"
    message = b"Subject: big\n\n" + line * 12000  # about 12 MB
    with ScriptedServer() as mx:
        zone.a("example.net", mx.ip)
        run = home.deliver("example.net", "a@example.org", ["b@example.net"], message)
    assert run.reports[-1].startswith(b"K")
    assert mx.received[0].content == message.replace(b"\n", b"\r\n")


def test_wrapper_that_cannot_import_still_reports_and_exits_zero(home, tmp_path):
    # The package's own paths are lost: nothing of qremote can be imported.
    broken = wrapper_text(home.path).replace(
        "sys.path[:0] = [", "sys.path[:] = ['/nonexistent']\n_lost = ["
    )
    with open(home.program, "w") as f:
        f.write(broken)
    run = rspawn.run_args(home.program, home.path, ["example.net", "a@b", "c@d"], MSG)
    assert run.status == 0
    assert run.output.startswith(b"Zqremote cannot start: ") and run.output.endswith(b"\0")
    run = rspawn.run_args(home.program, home.path, [])
    assert run.output == b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0"


def test_qremote_daemon_takes_only_a_usable_heartbeat(capsys):
    assert parser().parse_args(["daemon", "--heartbeat", "0.5"]).heartbeat == 0.5
    for bad in ("0", "-3", "nan", "86400", "soon"):
        with pytest.raises(SystemExit):
            parser().parse_args(["daemon", "--heartbeat", bad])
        assert f"{bad!r} is not a number of seconds" in capsys.readouterr().err


# -- the administrator's first hour ---------------------------------------------------------


def test_version_and_qmailhome_in_help(home):
    assert home.qremote("--version").stdout.startswith("qremote ")
    assert "QMAILHOME environment variable (default /var/qmail)" in home.qremote("--help").stdout


def test_keys_without_a_command_says_which_there_are(home):
    done = home.qremote("keys")
    assert done.returncode == 1
    assert done.stderr == (
        "qremote keys: say which: new, activate, dns, list or rotate (see --help)\n"
    )


def test_new_key_says_it_is_active_and_to_publish_first(home):
    done = home.qremote("keys", "new", "example.com", "--selector", "k1")
    assert "; it is ACTIVE now" in done.stdout and "Publish the record below first" in done.stdout
    later = home.qremote("keys", "new", "example.com", "--selector", "k2")
    assert "; it is not active" in later.stdout
    assert "qremote keys activate example.com k2" in later.stdout


def test_check_findings_go_to_stdout(home):
    home.write("timeoutremote", "soon\n")
    done = home.qremote("check", "--user", "root")
    assert done.returncode == 1
    assert done.stdout.startswith("control/timeoutremote: 'soon' is not a whole number\n")
    assert done.stderr == ""


def test_check_names_a_qmail_home_that_does_not_exist(home, tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "qremote.cli.qremote", "check"],
        env={**os.environ, "QMAILHOME": str(tmp_path / "nowhere")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stdout == (
        f"QMAILHOME {tmp_path}/nowhere does not exist (set QMAILHOME to the qmail home)\n"
    )


def test_check_names_a_qmail_remote_that_is_not_qremote(home):
    with open(home.program, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    done = home.qremote("check", "--user", "root")
    assert f"{home.program} is not qremote (run: qremote install)" in done.stdout


# -- every command says what it is -----------------------------------------------------------


def _run(argv: list[str], stdin=None):
    import subprocess

    return subprocess.run(
        argv, stdin=stdin if stdin is not None else subprocess.DEVNULL, capture_output=True
    )


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_every_command_answers_help_and_version_on_stdout(home, flag):
    import sys

    from qremote import __version__

    commands = {
        "qmail-remote": [home.program],
        "qremote-dkimverify": [sys.executable, "-m", "qremote.verify.filter"],
        "qremote": [sys.executable, "-m", "qremote.cli.qremote"],
    }
    for name, argv in commands.items():
        done = _run([*argv, flag])
        assert done.returncode == 0, (name, done)
        assert done.stderr == b"", (name, done.stderr)
        text = done.stdout.decode()
        assert (__version__ in text) if flag == "--version" else (len(text.splitlines()) > 3)


def test_the_verify_filter_at_a_terminal_says_what_it_is(home):
    import pty
    import sys

    controller, terminal = pty.openpty()
    try:
        done = _run([sys.executable, "-m", "qremote.verify.filter"], stdin=terminal)
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.returncode == 0
    assert done.stdout.startswith(b"qremote-dkimverify: a QMAILQUEUE filter")
