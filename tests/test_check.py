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


# -- every control file whose format is known: garbage in it is named ----------------------

GARBAGE = {
    "me": "me example org\n",
    "helohost": "\x01\x02\n",
    "smtproutes": "example.net relay.example.net\n",
    "authsenders": "a@example.org relay.example.net\n",
    "smtpauth": "relay.example.net user=a pw=\n",
    "timeoutconnect": "soon\n",
    "timeoutremote": "later\n",
    "nameservers": "not an address\n",
    "moreipme": "192.0.2.300\n",
    "notipme": "somewhere\n",
    "domainbindings": "example.org\n",
    "outgoingip": "not.an.ip\n",
    "mxgroups": "google:ten:.google.com\n",
    "mxgroupwait": "a minute\n",
    "sharedstate": "http://redis.example\n",
    "sharedlease": "x\n",
    "reuseidle": "x\n",
    "reusemessages": "x\n",
    "reuseage": "x\n",
    "dane": "maybe\n",
    "utf8headers": "sometimes\n",
    "mtasts": "yes\n",
    "tlsrptcontact": "not an address\n",
    "clientcert.pem": "not a certificate\n",
    "tlsclientciphers": "NO-SUCH-CIPHER\n",
    "dkimcanonicalization": "loose/loose\n",
    "dkimexpire": "never\n",
    "domainkeyscanonicalization": "sloppy\n",
    "unsignable": "maybe\n",
    "arcsign": "not a domain!\n",
    "shaping.toml": "[default\nmax_message_rate = 10/min\n",
    "shapingwait": "a while\n",
    "dkimverifytimeout": "x\n",
    "dkimverifypolicy": "example.com:drop\n",
    "dkimlength": "sometimes\n",
    "dkimverifyfallback": "maybe\n",
    "dkimrotate": "period\n",
    "queuelifetime": "a week\n",
    "concurrencyremote": "lots\n",
    "metrics": "somewhere:9716\n",
    "verifydmetrics": "127.0.0.1:99999\n",
}
FREE_FORM = {
    "tlsrptorg": "any organization name",
    "danecheck": "any DNS name; check asks the resolver about it",
    "authservid": "any token naming this host in Authentication-Results",
    "notlshosts": "a folder: any file name is an MX host name",
    "tlshosts": "a folder: checked file by file (.pem CA files)",
    "domainkeys": "a folder: checked key by key",
    "signonly": "its presence is the setting; its content is not read",
}


def test_every_file_in_the_table_is_either_checked_or_free_form():
    from qremote.settings import CONTROL_FILES

    names = {f.name for f in CONTROL_FILES}
    assert names == set(GARBAGE) | set(FREE_FORM)
    assert not set(GARBAGE) & set(FREE_FORM)


def test_garbage_in_any_known_format_is_named(home):
    from qremote.cli.check import problems

    missed = []
    for name, text in GARBAGE.items():
        home.write(name, text)
        try:
            found = problems(home.path)
        finally:
            home.remove(name)
        if not any(f"control/{name}" in p for p in found):
            missed.append((name, found))
    assert missed == []


def test_a_key_waiting_for_its_dns_record_is_a_note_for_a_day_then_a_problem(home, zone):
    """README's own flow: keys new --inactive, publish, wait, activate. Meanwhile a cron
    check must not mail an alarm; a key forgotten for more than a day is one."""
    made = home.qremote("keys", "new", "example.com", "--selector", "s1", "--inactive")
    assert made.returncode == 0, made
    done = home.qremote("check", "--user", "root")
    assert done.returncode == 0, done
    assert (
        "note: control/domainkeys/example.com: s1 waits to be activated (made 0 hours ago): "
        "publish its DNS record (qremote keys dns example.com), then qremote keys activate "
        "example.com s1"
    ) in done.stdout
    path = os.path.join(home.control, "domainkeys", "example.com", "s1.pem")
    two_days_ago = os.path.getmtime(path) - 2 * 86400
    os.utime(path, (two_days_ago, two_days_ago))
    late = home.qremote("check", "--user", "root")
    assert late.returncode == 1
    assert "example.com: no 'default', so no active key; s1 has waited 2 days" in late.stdout


def test_a_configured_rotation_whose_job_does_not_run_is_named(home, zone):
    keys.write_key(home.control, "example.com", "s1")
    home.write("dkimrotate", "period=90\n")

    def rotation_lines() -> list[str]:
        done = home.qremote("check", "--user", "root")
        return [line for line in done.stdout.splitlines() if "rotation job" in line]

    assert rotation_lines() == [
        "control/dkimrotate: the rotation job (qremote keys rotate) has never run: install "
        "its cron line (qremote install --cron /etc/cron.d/qremote)"
    ]
    home.qremote("keys", "rotate")
    assert rotation_lines() == []
    stamp = os.path.join(home.control, "domainkeys", ".rotate.last")
    with open(stamp, "w") as f:
        f.write(f"{int(os.path.getmtime(stamp)) - 3 * 86400}\n")
    assert rotation_lines() == [
        "control/dkimrotate: the rotation job last ran 72 hours ago: is its cron line "
        "installed and working (see its log)?"
    ]
