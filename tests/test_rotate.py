"""qremote keys rotate against a real authoritative server (knotd, TSIG UPDATE) and a
second, lagging one: time is moved forward with --now so that 90 days pass in a test."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from qremote.signing.keys import KeyStore
from qremote.signing.sign import sign_message
from tests.support import verifiers
from tests.support.dnsserver import DnsServer
from tests.support.keys import txt_strings
from tests.support.knot import IP, SECOND_IP, Knot

DAY = 86400
T0 = 1_800_000_000  # 2027-01-15
MSG = b"From: alice@example.com\nTo: bob@example.net\nSubject: s\n\nbody\n"


@pytest.fixture(scope="module")
def knot():
    with Knot() as server:
        yield server


@pytest.fixture
def second():
    """ns2.example.com: an authoritative server that only serves what a test gives it."""
    with DnsServer(SECOND_IP, 53) as server:
        yield server


@pytest.fixture
def site(home, knot):
    home.write("nameservers", f"{IP}:53\n")
    home.write("dkimrotate", f"period=90\ngrace=9\nprimary={IP}\ntsig={knot.tsig}\n")
    return home


def rotate(home, now: int) -> list[str]:
    done = home.qremote("keys", "rotate", "--now", str(now))
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def made(home, selector: str, when: int) -> None:
    """Date a key file as if it had been made at ``when`` (the tests' clock): the job
    measures a key's age from its file, as ``keys list`` does."""
    os.utime(os.path.join(folder(home), f"{selector}.pem"), (when, when))


def folder(home) -> str:
    return os.path.join(home.control, "domainkeys", "example.com")


def active(home) -> str:
    return os.readlink(os.path.join(folder(home), "default"))[:-4]


def signed(home) -> bytes:
    store = KeyStore(os.path.join(home.control, "domainkeys"))
    return sign_message(MSG, b"alice@example.com", store).headers + MSG


def test_a_whole_rotation_with_no_window_of_failing_signatures(site, knot, second, tmp_path):
    reveal = tmp_path / "revealed"
    with open(os.path.join(site.control, "dkimrotate"), "a") as f:
        f.write(f"revealdir={reveal}\n")
    printed = site.qremote("keys", "new", "example.com", "--selector", "old").stdout
    made(site, "old", T0)
    record = "".join(s for s in printed.split('"')[1::2])
    knot.update(lambda u: u.replace("old._domainkey", 60, "TXT", txt_strings(record)))

    assert rotate(site, T0) == []
    assert rotate(site, T0 + 89 * DAY) == []
    lines = rotate(site, T0 + 90 * DAY)
    new = lines[0].split()[2]
    assert lines == [
        f"example.com: made {new} (rsa 2048), pending",
        f"example.com: {new} published (sent to the primary)",
        f"example.com: {new} waiting: not yet served by ns2.example.com ({SECOND_IP})",
    ]
    assert new == "q20270415"
    assert knot.txt(f"{new}._domainkey.example.com")[0].startswith(b"v=DKIM1; k=rsa; p=")
    assert active(site) == "old"
    listed = [line.split("\t")[:3] for line in site.qremote("keys", "list").stdout.splitlines()]
    assert listed == [["example.com", "old", "active"], ["example.com", new, "published"]]
    before = signed(site)
    assert verifiers.dkimpy(before, IP, 53) == [True]

    # ns2 catches up; the next run switches.
    second.zone.add(
        f"{new}._domainkey.example.com",
        "TXT",
        txt_strings(knot.txt(f"{new}._domainkey.example.com")[0].decode()),
    )
    switch = T0 + 90 * DAY + 3600
    assert rotate(site, switch) == [f"example.com: {new} is active; old retiring"]
    assert active(site) == new
    after = signed(site)
    assert f"s={new};".encode() in after
    assert verifiers.dkimpy(after, IP, 53) == [True]
    assert verifiers.dkimpy(before, IP, 53) == [True]  # the old key is still published

    assert rotate(site, switch + 9 * DAY - 1) == []
    assert knot.txt("old._domainkey.example.com") != []
    revealed = reveal / "old._domainkey.example.com.pem"
    assert rotate(site, switch + 9 * DAY) == [
        "example.com: old withdrawn, retired",
        f"example.com: old private key revealed in {revealed}",
    ]
    assert knot.txt("old._domainkey.example.com") == []
    assert revealed.read_bytes() == open(os.path.join(folder(site), "old.pem"), "rb").read()
    assert site.qremote("check", "--user", "root").returncode == 0
    assert verifiers.dkimpy(after, IP, 53) == [True]
    with open(os.path.join(folder(site), "rotation.json")) as f:
        states = {k: v["state"] for k, v in json.load(f)["selectors"].items()}
    assert states == {"old": "retired", new: "active"}


def test_an_interrupted_run_resumes(site, knot, second, home):
    site.qremote("keys", "new", "example.com", "--selector", "first")
    made(site, "first", T0)
    rotate(site, T0)
    good = open(os.path.join(site.control, "dkimrotate")).read()
    site.write("dkimrotate", good.replace(f"primary={IP}", "primary=127.5.0.9"))
    lines = rotate(site, T0 + 91 * DAY)
    new = lines[0].split()[2]
    assert lines[1].startswith(
        f"example.com: {new} not published yet: the primary 127.5.0.9:53 did not answer ("
    )
    assert active(site) == "first"
    site.write("dkimrotate", good)
    lines = rotate(site, T0 + 91 * DAY + 60)
    assert lines[0] == f"example.com: {new} published (sent to the primary)"
    assert lines[1].startswith(f"example.com: {new} waiting: not yet served by ns2")


def test_without_a_primary_the_record_is_written_for_the_administrator(site, second):
    site.write("dkimrotate", "period=1\n")
    site.qremote("keys", "new", "example.com", "--selector", "hand")
    made(site, "hand", T0)
    rotate(site, T0)
    lines = rotate(site, T0 + DAY)
    new = lines[0].split()[2]
    assert lines[1] == f"example.com: {new} published (publish {new}.zone by hand)"
    with open(os.path.join(folder(site), f"{new}.zone")) as f:
        assert f.read().startswith(f"{new}._domainkey.example.com. 3600 IN TXT (")
    assert active(site) == "hand"


def test_two_runs_at_once_do_not_both_act(site):
    site.qremote("keys", "new", "example.com", "--selector", "k")
    lock = os.open(os.path.join(site.control, "domainkeys", ".rotate.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        done = site.qremote("keys", "rotate", "--now", str(T0 + 100 * DAY))
    finally:
        os.close(lock)
    assert done.returncode == 1
    assert done.stdout == "another rotation is running; nothing done\n"
    assert not os.path.exists(os.path.join(folder(site), "rotation.json"))


def test_check_warns_when_the_signing_key_is_being_withdrawn(site):
    site.qremote("keys", "new", "example.com", "--selector", "k")
    with open(os.path.join(folder(site), "rotation.json"), "w") as f:
        json.dump({"selectors": {"k": {"state": "retiring", "since": T0}}}, f)
    problems = site.qremote("check", "--user", "root").stdout.splitlines()
    assert problems[0] == (
        "control/domainkeys/example.com: k is active but the rotation job has it retiring: "
        "its DNS record is (or will be) withdrawn"
    )


def test_a_run_interrupted_after_the_switch_still_retires_the_old_key(site):
    site.qremote("keys", "new", "example.com", "--selector", "a")
    made(site, "a", T0)
    rotate(site, T0)
    site.qremote("keys", "new", "example.com", "--selector", "b", "--inactive")
    made(site, "b", T0)
    # As if a run died between switching the symlink and writing its state:
    site.qremote("keys", "activate", "example.com", "b")
    assert rotate(site, T0 + DAY) == ["example.com: a retiring (switch completed)"]
    with open(os.path.join(folder(site), "rotation.json")) as f:
        states = {k: v["state"] for k, v in json.load(f)["selectors"].items()}
    assert states == {"a": "retiring", "b": "active"}


def test_a_key_already_older_than_the_period_is_replaced_on_the_first_run(site, second):
    site.qremote("keys", "new", "example.com", "--selector", "ancient")
    made(site, "ancient", T0 - 200 * DAY)
    assert site.qremote("keys", "list").stdout.split("\t")[5].strip() != "0d"
    lines = rotate(site, T0)
    assert lines[0] == "example.com: made q20270115 (rsa 2048), pending"


def _publish_printed(knot, second, printed: str) -> str:
    owner = printed.split("._domainkey.")[0].split()[-1]
    record = "".join(s for s in printed.split('"')[1::2])
    knot.update(lambda u: u.replace(f"{owner}._domainkey", 60, "TXT", txt_strings(record)))
    second.zone.add(f"{owner}._domainkey.example.com", "TXT", txt_strings(record))
    return owner


def test_rsa_and_ed25519_keys_rotate_each_on_its_own_schedule(site, knot, second):
    """An Ed25519 key made long ago and an RSA key made at T0: the Ed25519 one is replaced
    first, and only once every name server serves its successor; at every step a message
    signed now verifies with both keys (dkimpy; Mail::DKIM here predates Ed25519)."""
    for args in (["--selector", "r1"], ["--selector", "e1", "--type", "ed25519"]):
        _publish_printed(knot, second, site.qremote("keys", "new", "example.com", *args).stdout)
    made(site, "r1", T0 - 20 * DAY)
    made(site, "e1", T0 - 100 * DAY)
    assert verifiers.dkimpy(signed(site), IP, 53) == [True, True]

    lines = rotate(site, T0)
    new_ed = lines[0].split()[2]
    assert lines == [
        f"example.com: made {new_ed} (ed25519), pending",
        f"example.com: {new_ed} published (sent to the primary)",
        f"example.com: {new_ed} waiting: not yet served by ns2.example.com ({SECOND_IP})",
    ]
    assert os.readlink(os.path.join(folder(site), "ed25519")) == "e1.pem"
    assert verifiers.dkimpy(signed(site), IP, 53) == [True, True]
    second.zone.add(
        f"{new_ed}._domainkey.example.com",
        "TXT",
        txt_strings(knot.txt(f"{new_ed}._domainkey.example.com")[0].decode()),
    )
    assert rotate(site, T0 + 3600) == [f"example.com: {new_ed} is active; e1 retiring"]
    assert os.readlink(os.path.join(folder(site), "ed25519")) == f"{new_ed}.pem"
    assert active(site) == "r1"
    message = signed(site)
    assert f"s={new_ed};".encode() in message and b"s=r1;" in message
    assert verifiers.dkimpy(message, IP, 53) == [True, True]

    lines = rotate(site, T0 + 70 * DAY)
    new_rsa = lines[0].split()[2]
    assert lines[0] == f"example.com: made {new_rsa} (rsa 2048), pending"
    assert "e1 withdrawn, retired" in " ".join(lines)
    second.zone.add(
        f"{new_rsa}._domainkey.example.com",
        "TXT",
        txt_strings(knot.txt(f"{new_rsa}._domainkey.example.com")[0].decode()),
    )
    assert rotate(site, T0 + 70 * DAY + 60) == [f"example.com: {new_rsa} is active; r1 retiring"]
    message = signed(site)
    assert f"s={new_rsa};".encode() in message and f"s={new_ed};".encode() in message
    assert verifiers.dkimpy(message, IP, 53) == [True, True]
    perl = verifiers.mail_dkim(message, IP, 53)
    assert ("dkim", new_rsa, "pass") in [(k, s, d) for k, _, s, d in perl]


def test_a_refused_tsig_key_is_said_in_words_and_fails_the_run(site, knot):
    site.qremote("keys", "new", "example.com", "--selector", "k")
    made(site, "k", T0)
    name, algorithm, _ = knot.tsig.split(":", 2)
    site.write("dkimrotate", f"period=90\nprimary={IP}\ntsig={name}:{algorithm}:d3Jvbmc=\n")
    done = site.qremote("keys", "rotate", "--now", str(T0 + 91 * DAY))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[1] == (
        f"example.com: q20270416 not published yet: the primary {IP}:53 refused our TSIG key "
        f"{name!r} (PeerBadSignature): check tsig= in control/dkimrotate against the key the "
        "primary has"
    )
    assert done.stderr == (
        "qremote keys: a domain needs attention before its rotation can go on\n"
    )


def test_check_names_a_rotation_stuck_for_more_than_a_day(site):
    import time

    site.qremote("keys", "new", "example.com", "--selector", "k")
    now = int(time.time())
    with open(os.path.join(folder(site), "rotation.json"), "w") as f:
        json.dump(
            {
                "selectors": {
                    "k": {"state": "active", "since": now - 100 * DAY},
                    "n": {"state": "published", "since": now - 2 * DAY - 60},
                }
            },
            f,
        )
    problems = site.qremote("check", "--user", "root").stdout.splitlines()
    assert (
        "control/domainkeys/example.com: key rotation stuck: n published for 2 days: not yet "
        "served by every authoritative name server"
    ) in problems


def _to_the_waiting_step(site, knot) -> str:
    """Run the job until the new key is published and waits for ns2; its selector."""
    printed = site.qremote("keys", "new", "example.com", "--selector", "old").stdout
    made(site, "old", T0)
    record = "".join(s for s in printed.split('"')[1::2])
    knot.update(lambda u: u.replace("old._domainkey", 60, "TXT", txt_strings(record)))
    lines = rotate(site, T0 + 90 * DAY)
    return lines[0].split()[2]


def test_a_name_server_reachable_over_udp_alone_counts_as_serving(site, knot, second):
    """Name servers are asked as resolvers ask them: UDP, and TCP only when truncated.
    ns2 here does not take TCP at all, and serves the record over UDP."""
    new = _to_the_waiting_step(site, knot)
    second.tcp.shutdown()
    second.tcp.server_close()
    second.zone.add(
        f"{new}._domainkey.example.com",
        "TXT",
        txt_strings(knot.txt(f"{new}._domainkey.example.com")[0].decode()),
    )
    assert rotate(site, T0 + 90 * DAY + 3600) == [f"example.com: {new} is active; old retiring"]


def test_a_name_server_that_cannot_be_asked_is_named_as_such(site, knot, second):
    new = _to_the_waiting_step(site, knot)
    second.zone.drop.add(f"{new}._domainkey.example.com")  # silent, over UDP and TCP
    assert rotate(site, T0 + 90 * DAY + 3600) == [
        f"example.com: {new} waiting: cannot ask ns2.example.com ({SECOND_IP}): no answer "
        "within 5 seconds (UDP, then TCP if truncated)"
    ]
    assert active(site) == "old"
