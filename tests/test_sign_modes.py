"""``qremote sign`` and the sign-only mode that hands the signed message to
qmail-remote.orig: the same signer, the same key choice."""

from __future__ import annotations

import os

from tests.support import keys, verifiers

MSG = b"From: alice@example.com\nTo: bob@example.net\nSubject: s\n\nbody\n"


def fake_original(home, tmp_path) -> tuple[str, str]:
    out, args = str(tmp_path / "stdin-seen"), str(tmp_path / "args-seen")
    program = os.path.join(home.path, "bin", "qmail-remote.orig")
    with open(program, "w") as f:
        f.write(f"#!/bin/sh\ncat > {out}\necho \"$@\" > {args}\nprintf 'r\\000Kfake ok\\n\\000'\n")
    os.chmod(program, 0o755)
    return out, args


def test_sign_only_execs_the_original_with_the_signed_message(home, zone, dns_server, tmp_path):
    key = keys.write_key(home.control, "example.com", "s1")
    keys.publish(zone, "example.com", "s1", key)
    home.write("signonly", "")
    seen, args = fake_original(home, tmp_path)
    run = home.deliver(
        "example.net", "alice@example.com", ["bob@example.net", "c@example.net"], MSG
    )
    assert run.status == 0
    assert run.output == b"r\0Kfake ok\n\0"
    with open(args) as f:
        assert f.read() == "example.net alice@example.com bob@example.net c@example.net\n"
    with open(seen, "rb") as f:
        signed = f.read()
    assert signed.endswith(MSG) and signed.startswith(b"DKIM-Signature: ")
    assert b"\r" not in signed  # the original gets a queue-style message, LF line ends
    assert verifiers.dkimpy(signed, dns_server.ip, dns_server.port) == [True]


def test_sign_only_without_the_original_is_temporary(home, zone):
    home.write("signonly", "")
    run = home.deliver("example.net", "alice@example.com", ["bob@example.net"], MSG)
    assert run.status == 0
    assert run.output == (
        b"Zcannot run " + home.path.encode() + b"/bin/qmail-remote.orig: "
        b"No such file or directory. (#4.3.0)\n\0"
    )


def test_sign_only_with_a_broken_key_does_not_exec(home, zone, tmp_path):
    keys.write_key(home.control, "example.com", "s1", mode=0o644)
    home.write("signonly", "")
    seen, _ = fake_original(home, tmp_path)
    run = home.deliver("example.net", "alice@example.com", ["bob@example.net"], MSG)
    assert run.output.startswith(b"ZUnable to sign message: signing key unusable: ")
    assert not os.path.exists(seen)


def test_qremote_sign_writes_the_signed_message(home, zone, dns_server):
    key = keys.write_key(home.control, "example.com", "s1")
    keys.publish(zone, "example.com", "s1", key)
    done = home.qremote("sign", "--sender", "alice@example.com", "-v", input=MSG, text=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(MSG)
    assert done.stderr.decode().startswith("Signed: DKIM d=example.com s=s1 rsa-sha256")
    assert verifiers.dkimpy(done.stdout, dns_server.ip, dns_server.port) == [True]


def test_qremote_sign_refuses_with_one_line_and_no_output(home):
    keys.write_key(home.control, "example.com", "s1", mode=0o640)
    done = home.qremote("sign", "--sender", "alice@example.com", input=MSG, text=False)
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.decode().count("\n") == 1
    assert "readable by group or others" in done.stderr.decode()
