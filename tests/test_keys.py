"""qremote keys new / dns / list, and qremote check comparing active keys with DNS."""

from __future__ import annotations

import os
import re
import stat

from qremote.signing.keys import KeyStore
from qremote.signing.sign import sign_message
from tests.support import verifiers

MSG = b"From: alice@example.com\nTo: bob@example.net\nSubject: s\n\nbody\n"


def publish_printed(zone, printed: str) -> str:
    """Load the zone-file text `keys new` printed into the loopback DNS server."""
    owner = re.search(r"^(\S+)\s+\d+\s+IN\s+TXT", printed, re.M).group(1)
    strings = re.findall(r'"([^"]*)"', printed)
    assert all(len(s) <= 255 for s in strings)
    zone.add(owner.rstrip("."), "TXT", " ".join(f'"{s}"' for s in strings))
    return "".join(strings)


def test_new_rsa_key_is_private_active_and_its_record_verifies(home, zone, dns_server):
    done = home.qremote("keys", "new", "example.com", "--selector", "k1")
    assert done.returncode == 0, done.stderr
    path = os.path.join(home.control, "domainkeys", "example.com", "k1.pem")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.readlink(os.path.join(home.control, "domainkeys", "example.com", "default")) == (
        "k1.pem"
    )
    assert "k1._domainkey.example.com. 3600 IN TXT (" in done.stdout
    record = publish_printed(zone, done.stdout)
    assert record.startswith("v=DKIM1; k=rsa; p=")
    store = KeyStore(os.path.join(home.control, "domainkeys"))
    signed = sign_message(MSG, b"alice@example.com", store)
    assert verifiers.dkimpy(signed.headers + MSG, dns_server.ip, dns_server.port) == [True]


def test_ed25519_key_becomes_the_second_signature(home, zone, dns_server):
    for args in (["--selector", "r1"], ["--type", "ed25519", "--selector", "e1"]):
        done = home.qremote("keys", "new", "example.com", *args)
        assert done.returncode == 0, done.stderr
        publish_printed(zone, done.stdout)
    store = KeyStore(os.path.join(home.control, "domainkeys"))
    signed = sign_message(MSG, b"alice@example.com", store)
    assert "s=e1 ed25519-sha256" in signed.note
    assert verifiers.dkimpy(signed.headers + MSG, dns_server.ip, dns_server.port) == [True, True]


def test_weak_rsa_is_refused(home):
    done = home.qremote("keys", "new", "example.com", "--bits", "1024")
    assert done.returncode == 1
    assert "1024-bit RSA is too weak (RFC 8301); use 2048 or more (1024 only with --force)" in (
        done.stderr
    )
    assert home.qremote("keys", "new", "example.com", "--bits", "1024", "--force").returncode == 0
    assert home.qremote("keys", "new", "example.com", "--bits", "512", "--force").returncode == 1


def test_a_second_key_waits_and_dns_and_list_show_both(home):
    assert home.qremote("keys", "new", "example.com", "--selector", "old").returncode == 0
    assert home.qremote("keys", "new", "example.com", "--selector", "new").returncode == 0
    folder = os.path.join(home.control, "domainkeys", "example.com")
    assert os.readlink(os.path.join(folder, "default")) == "old.pem"
    dns = home.qremote("keys", "dns", "example.com").stdout
    assert "new._domainkey.example.com." in dns and "old._domainkey.example.com." in dns
    rows = [line.split("\t") for line in home.qremote("keys", "list").stdout.splitlines()]
    assert [r[:5] for r in rows] == [
        ["example.com", "new", "inactive", "rsa", "2048"],
        ["example.com", "old", "active", "rsa", "2048"],
    ]


def test_default_selector_is_date_based(home):
    done = home.qremote("keys", "new", "example.com")
    assert re.search(r"^q\d{8}\._domainkey\.example\.com\. ", done.stdout, re.M)


def test_check_compares_active_keys_with_dns(home, zone):
    done = home.qremote("keys", "new", "example.com", "--selector", "k1")
    check = home.qremote("check", "--user", "root")
    assert check.returncode == 1
    assert check.stdout.splitlines() == [
        "k1._domainkey.example.com: no TXT record; publish it (qremote keys dns example.com)"
    ]
    zone.add("k1._domainkey.example.com", "TXT", '"v=DKIM1; k=rsa; p=MIIBIjANBg"')
    assert home.qremote("check", "--user", "root").stdout.splitlines() == [
        "k1._domainkey.example.com: the DNS record does not match control/domainkeys/example.com"
    ]
    zone.records.clear()
    publish_printed(zone, done.stdout)
    assert home.qremote("check", "--user", "root").returncode == 0


def test_inactive_key_then_atomic_activation(home, zone, dns_server):
    home.qremote("keys", "new", "example.com", "--selector", "old")
    done = home.qremote("keys", "new", "example.com", "--selector", "next", "--inactive")
    folder = os.path.join(home.control, "domainkeys", "example.com")
    assert os.readlink(os.path.join(folder, "default")) == "old.pem"
    publish_printed(zone, done.stdout)
    switched = home.qremote("keys", "activate", "example.com", "next")
    assert switched.returncode == 0 and switched.stdout == "example.com: default is now next\n"
    assert os.readlink(os.path.join(folder, "default")) == "next.pem"
    assert sorted(os.listdir(folder)) == ["default", "next.pem", "old.pem"]
    signed = sign_message(
        MSG, b"alice@example.com", KeyStore(os.path.join(home.control, "domainkeys"))
    )
    assert "s=next" in signed.note
    assert verifiers.dkimpy(signed.headers + MSG, dns_server.ip, dns_server.port) == [True]
    missing = home.qremote("keys", "activate", "example.com", "nope")
    assert missing.returncode == 1 and "nope.pem: not a usable key" in missing.stderr


def test_check_names_a_key_qmailr_cannot_read(home, zone):
    done = home.qremote("keys", "new", "example.com", "--selector", "k1", "--user", "nobody")
    publish_printed(zone, done.stdout)
    assert home.qremote("check", "--user", "nobody").returncode == 0  # keys new chowned it
    os.chown(os.path.join(home.control, "domainkeys", "example.com", "k1.pem"), 0, 0)
    check = home.qremote("check", "--user", "nobody")
    assert check.stdout.splitlines() == [
        "control/domainkeys/example.com/k1.pem: owned by root, so nobody (qmail-remote) cannot "
        "read it; chown nobody it"
    ]
