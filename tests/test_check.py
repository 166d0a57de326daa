"""qremote check names what would make deliveries fail, one line per problem."""

from __future__ import annotations

import os

from tests.support import keys


def test_clean_installation_has_no_problems(home, zone):
    keys.publish(zone, "example.com", "s1", keys.write_key(home.control, "example.com", "s1"))
    home.write("domainbindings", "example.com:127.0.0.7\n")
    done = home.qremote("check", "--user", "root")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "qremote check: no problems found; bin/qmail-remote is the Python thin client\n"
    )


def test_problems_are_listed_one_per_line(home):
    home.write("domainbindings", "example.com:127.0.0.7\nexample.org:203.0.113.9\n")
    home.write("outgoingip", "198.51.100.3\n")
    home.write("tlshosts/mx.example.net.pem", "garbage\n")
    home.write("tlshosts/readme.txt", "x\n")
    home.write("tlsclientciphers", "NOPE\n")
    home.write("timeoutremote", "soon\n")
    keys.write_key(home.control, "example.com", "s1", mode=0o644)
    os.makedirs(os.path.join(home.control, "domainkeys", "empty.org"))
    done = home.qremote("check", "--user", "root")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    expected_starts = [
        "control/timeoutremote: 'soon' is not a whole number",
        "control/domainbindings line 2: 203.0.113.9 is not an address of this host",
        "control/outgoingip: 198.51.100.3 is not an address of this host",
        "control/tlshosts/mx.example.net.pem: not a usable CA file",
        "control/tlshosts/readme.txt: not used",
        "control/tlsclientciphers: OpenSSL accepts no cipher in 'NOPE'",
        "control/domainkeys/empty.org: no 'default', so no active key",
        "control/domainkeys/example.com/s1.pem is readable by group or others (mode 0644)",
    ]
    assert len(lines) == len(expected_starts), lines
    for line, start in zip(lines, expected_starts, strict=True):
        assert line.startswith(start), (line, start)


def test_a_qremoted_socket_nobody_answers_on_is_a_problem(home):
    from tests.support.daemon import Qremoted

    daemon = Qremoted(home).start()
    assert home.qremote("check", "--user", "root").returncode == 0
    daemon.kill()  # a killed daemon leaves its socket behind
    done = home.qremote("check", "--user", "root")
    assert done.returncode == 1
    sock = os.path.join(home.path, "qremote", "qremoted.sock")
    assert done.stdout == (
        f"{sock}: no qremoted answers (it was killed?); deliveries run in-process\n"
    )


def test_a_qremoted_socket_qmail_remotes_user_cannot_use_is_a_problem(home):
    from tests.support.daemon import Qremoted

    with Qremoted(home):  # runs as root here; qmail-remote runs as nobody
        done = home.qremote("check", "--user", "nobody")
    sock = os.path.join(home.path, "qremote", "qremoted.sock")
    assert f"{sock}: owned by root, so nobody (qmail-remote) cannot use qremoted" in done.stdout


def test_reuse_settings_must_be_whole_numbers(home):
    home.write("reuseidle", "a while\n")
    done = home.qremote("check", "--user", "root")
    assert done.returncode == 1
    assert done.stdout.startswith("control/reuseidle: 'a while' is not a whole number")
