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
    rotate(site, T0)
    good = open(os.path.join(site.control, "dkimrotate")).read()
    site.write("dkimrotate", good.replace(f"primary={IP}", "primary=127.5.0.9"))
    lines = rotate(site, T0 + 91 * DAY)
    new = lines[0].split()[2]
    assert lines[1].startswith(f"example.com: {new} not published yet: UPDATE to 127.5.0.9:53 ")
    assert active(site) == "first"
    site.write("dkimrotate", good)
    lines = rotate(site, T0 + 91 * DAY + 60)
    assert lines[0] == f"example.com: {new} published (sent to the primary)"
    assert lines[1].startswith(f"example.com: {new} waiting: not yet served by ns2")


def test_without_a_primary_the_record_is_written_for_the_administrator(site, second):
    site.write("dkimrotate", "period=1\n")
    site.qremote("keys", "new", "example.com", "--selector", "hand")
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
    rotate(site, T0)
    site.qremote("keys", "new", "example.com", "--selector", "b", "--inactive")
    # As if a run died between switching the symlink and writing its state:
    site.qremote("keys", "activate", "example.com", "b")
    assert rotate(site, T0 + DAY) == ["example.com: a retiring (switch completed)"]
    with open(os.path.join(folder(site), "rotation.json")) as f:
        states = {k: v["state"] for k, v in json.load(f)["selectors"].items()}
    assert states == {"a": "retiring", "b": "active"}
