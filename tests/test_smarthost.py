"""Relaying through a smarthost with SMTP AUTH, against real aiosmtpd relays on 127.x:
smtproutes credentials in both patches' forms, control/smtpauth, control/authsenders,
each mechanism, STARTTLS and implicit TLS, and every way a password could leak."""

from __future__ import annotations

import base64
import os

import pytest

from tests.support import certs, keys, verifiers
from tests.support.smtpserver import Script, ScriptedServer, fresh_ip

MSG = b"From: a@example.org\nSubject: relayed\n\nbody\n"
RELAY = "relay.example.net"
PASSWORD = b"s3cret-PW"


@pytest.fixture(scope="module")
def ca():
    return certs.Authority.create()


@pytest.fixture
def trusted(tmp_path, ca):
    """The environment a delivery runs in: the test CA is the system's CA store
    (OpenSSL's SSL_CERT_FILE), as ca-certificates is on a real host."""
    path = tmp_path / "system-ca.pem"
    path.write_bytes(ca.pem())
    return {"SSL_CERT_FILE": str(path)}


def relay_tls(tmp_path, ca, name=RELAY, folder="relay"):
    return certs.server_context(*ca.issue(name), str(tmp_path / folder))


def relay(tmp_path, ca, zone, accounts=None, **kw) -> ScriptedServer:
    """An AUTH relay called relay.example.net, offering STARTTLS (unless told otherwise)."""
    if "tls_context" not in kw and "implicit_tls" not in kw:
        kw["tls_context"] = relay_tls(tmp_path, ca)
    server = ScriptedServer(accounts=accounts or {b"alice": PASSWORD}, **kw)
    zone.a(RELAY, server.ip)
    return server


def send(home, env, sender="a@example.org", message=MSG):
    run = home.deliver("example.com", sender, ["b@example.com"], message, env=env)
    assert run.status == 0
    return run


def leaked(server: ScriptedServer, password: bytes = PASSWORD) -> bool:
    """Did the password reach the server in any form a mechanism could carry it?"""
    seen = bytes(server.received_bytes)
    forms = [password, base64.b64encode(password), base64.b64encode(b"\0alice\0" + password)]
    return any(form in seen for form in forms)


# -- the patches' formats and each mechanism ---------------------------------------------


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"])
def test_each_mechanism_over_starttls_with_fehcom_credentials(
    home, zone, tmp_path, ca, trusted, mech, dns_server
):
    keys.publish(zone, "example.org", "s1", keys.write_key(home.control, "example.org", "s1"))
    with relay(tmp_path, ca, zone) as srv:
        home.write("smtproutes", f"example.com:{RELAY}:25|alice|{PASSWORD.decode()}\n")
        home.write("smtpauth", f"{RELAY} mech={mech}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"K"), run.qmail
    report = run.reports[-1]
    assert f"Authenticated as alice ({mech}) over TLSv1.3.".encode() in report
    assert b", verified" in report and PASSWORD not in report
    assert srv.auth_attempts == [(mech, b"alice", True)]
    [conn] = srv.connections
    assert [c.split()[0] for c in conn.commands][:3] == ["EHLO", "STARTTLS", "EHLO"]
    [got] = srv.received
    assert got.login == b"alice"
    assert verifiers.dkimpy(got.content, dns_server.ip, dns_server.port) == [True]


def test_the_strongest_offered_mechanism_is_chosen(home, zone, tmp_path, ca, trusted):
    script = Script(extensions=["AUTH LOGIN PLAIN CRAM-MD5"])
    with relay(tmp_path, ca, zone, script=script) as srv:
        home.write("smtproutes", f":{RELAY}:25|alice|{PASSWORD.decode()}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"K") and srv.auth_attempts == [("CRAM-MD5", b"alice", True)]


def test_scram_is_preferred_when_offered(home, zone, tmp_path, ca, trusted):
    with relay(tmp_path, ca, zone) as srv:
        home.write("smtproutes", f":{RELAY}|alice|{PASSWORD.decode()}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"K") and srv.auth_attempts == [("SCRAM-SHA-256", b"alice", True)]


def test_clegg_credentials_after_the_relay(home, zone, tmp_path, ca, trusted):
    with relay(tmp_path, ca, zone) as srv:
        home.write("smtproutes", f".com:{RELAY}:25 alice {PASSWORD.decode()}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"K") and srv.received[0].login == b"alice"


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN", "CRAM-MD5"])
def test_a_fehcom_password_may_hold_colons_bars_spaces_and_utf8(
    home, zone, tmp_path, ca, trusted, mech
):
    password = "p:a|ss wörd|x".encode()
    with relay(tmp_path, ca, zone, accounts={b"alice": password}) as srv:
        home.write("smtproutes", f"example.com:{RELAY}:25|alice|{password.decode()}\n")
        home.write("smtpauth", f"{RELAY}:25 mech={mech}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"K"), run.qmail
    assert srv.auth_attempts == [(mech, b"alice", True)]


def test_smtpauth_carries_any_byte(home, zone, tmp_path, ca, trusted):
    """Percent-encoded: a trailing space, '%', a newline, bytes that are not UTF-8."""
    password = b"100% sure\n\xff "
    with relay(tmp_path, ca, zone, accounts={b"al ice": password}) as srv:
        home.write("smtproutes", f"example.com:{RELAY}\n")
        home.write(
            "smtpauth", f"{RELAY} user=al%20ice password=100%25%20sure%0A%FF%20 mech=PLAIN\n"
        )
        run = send(home, trusted)
    assert run.qmail.startswith(b"K"), run.qmail
    assert srv.auth_attempts[0][1:] == (b"al ice", True)


def test_implicit_tls_on_port_465(home, zone, tmp_path, ca, trusted):
    with relay(tmp_path, ca, zone, implicit_tls=relay_tls(tmp_path, ca), port=465) as srv:
        home.write("smtproutes", f"example.com:{RELAY}:465|alice|{PASSWORD.decode()}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"K"), run.qmail
    assert b"Authenticated as alice (SCRAM-SHA-256) over TLSv1.3." in run.reports[-1]
    [conn] = srv.connections
    assert "STARTTLS" not in conn.commands and srv.received[0].login == b"alice"


def test_implicit_tls_on_another_port_when_smtpauth_says_so(home, zone, tmp_path, ca, trusted):
    with relay(tmp_path, ca, zone, implicit_tls=relay_tls(tmp_path, ca), port=4650) as srv:
        home.write("smtproutes", f"example.com:{RELAY}:4650 alice {PASSWORD.decode()}\n")
        home.write("smtpauth", f"{RELAY}:4650 tls=implicit\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"K"), run.qmail
    assert srv.received[0].login == b"alice"


# -- outcomes --------------------------------------------------------------------------


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN"])
def test_refused_credentials_are_temporary_with_the_relays_words(
    home, zone, tmp_path, ca, trusted, mech
):
    with relay(tmp_path, ca, zone, accounts={b"alice": b"other"}) as srv:
        home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
        home.write("smtpauth", f"{RELAY} mech={mech}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"Z"), run.qmail
    assert f"but authentication as alice ({mech}) failed. (#4.7.0)".encode() in run.qmail
    assert b"Remote host said: 535 5.7.8" in run.qmail
    assert not srv.received and PASSWORD not in run.qmail


def test_a_relay_that_cannot_prove_the_password_gets_no_mail(home, zone, tmp_path, ca, trusted):
    """SCRAM is mutual: a 235 from a relay whose signature is wrong is not believed."""
    with relay(tmp_path, ca, zone) as srv:
        srv.scram_wrong_signature = True
        home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"Z"), run.qmail
    assert b"the relay's signature is wrong" in run.qmail
    assert not srv.received and not any(c.startswith("MAIL") for c in srv.connections[0].commands)


def test_530_without_credentials_names_the_route(home, zone, tmp_path, ca, trusted):
    script = Script(mail="530 5.7.0 Authentication required")
    with relay(tmp_path, ca, zone, script=script):
        home.write("smtproutes", f"example.com:{RELAY}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"Z")
    assert b"requires authentication, and control/smtproutes line for 'example.com' has no" in (
        run.qmail
    )


def test_a_5xx_after_auth_follows_qmails_table(home, zone, tmp_path, ca, trusted):
    script = Script(rcpt="550 5.1.1 no such user")
    with relay(tmp_path, ca, zone, script=script):
        home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"D") and b"does not like recipient" in run.qmail


# -- never a password in clear -------------------------------------------------------------


def test_no_starttls_means_no_auth_and_no_mail(home, zone, tmp_path, ca, trusted):
    """The relay offers AUTH in plain text; we never take it up."""
    server = ScriptedServer(accounts={b"alice": PASSWORD}, auth_require_tls=False)
    zone.a(RELAY, server.ip)
    with server as srv:
        home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"Z") and b"TLS is required and was not negotiated" in run.qmail
    assert b"AUTH" not in bytes(srv.received_bytes) and not leaked(srv)
    assert not srv.received


def test_an_unverifiable_certificate_means_no_auth(home, zone, tmp_path, ca, trusted):
    stranger = certs.Authority.create("not trusted")
    tls = certs.server_context(*stranger.issue(RELAY), str(tmp_path / "x"))
    with relay(tmp_path, ca, zone, tls_context=tls) as srv:
        home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"Z") and b"TLS failed: certificate not accepted" in run.qmail
    assert not srv.auth_attempts and not leaked(srv) and not srv.received
    assert len(srv.connections) == 1  # no plain-text retry


def test_a_certificate_for_another_name_means_no_auth(home, zone, tmp_path, ca, trusted):
    with relay(tmp_path, ca, zone, tls_context=relay_tls(tmp_path, ca, "other.example")) as srv:
        home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"Z") and b"certificate not accepted" in run.qmail
    assert not leaked(srv) and not srv.received


def test_a_relay_given_by_address_is_verified_by_address(home, zone, tmp_path, ca, trusted):
    ip = fresh_ip()
    tls = certs.server_context(*certs.issue_for_ip(ca, ip), str(tmp_path / "i"))
    with ScriptedServer(accounts={b"alice": PASSWORD}, ip=ip, tls_context=tls) as srv:
        home.write("smtproutes", f"example.com:{srv.ip}|alice|{PASSWORD.decode()}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"K"), run.qmail


def test_tlshosts_pem_names_the_relays_ca(home, zone, tmp_path, ca):
    private = certs.Authority.create("private CA")
    with relay(
        tmp_path,
        ca,
        zone,
        tls_context=certs.server_context(*private.issue(RELAY), str(tmp_path / "p")),
    ) as srv:
        home.write(f"tlshosts/{RELAY}.pem", private.pem().decode())
        home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
        run = send(home, {})
    assert run.qmail.startswith(b"K") and srv.received[0].login == b"alice"


def test_verify_no_takes_a_self_signed_relay_but_still_only_tls(home, zone, tmp_path, ca):
    tls = certs.server_context(*certs.self_signed(RELAY), str(tmp_path / "s"))
    with relay(tmp_path, ca, zone, tls_context=tls) as srv:
        home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
        home.write("smtpauth", f"{RELAY} verify=no\n")
        run = send(home, {})
    assert run.qmail.startswith(b"K") and b", not verified" in run.reports[-1]
    assert srv.connections[0].tls


def test_notlshosts_for_an_auth_relay_is_a_configuration_error(home, zone, tmp_path, ca, trusted):
    with relay(tmp_path, ca, zone) as srv:
        home.write(f"notlshosts/{RELAY}", "")
        home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
        run = send(home, trusted)
    assert run.qmail.startswith(b"ZUnable to read control files.")
    assert f"control/notlshosts/{RELAY} forbids TLS".encode() in run.qmail
    assert not srv.connections
    said = home.qremote("check", "--user", "root").stdout
    assert f"control/notlshosts/{RELAY} forbids TLS, but control/smtproutes line" in said


SECRET = "TOPSECRET-42"


@pytest.mark.parametrize(
    "file,line",
    [
        ("smtproutes", f"example.com:{RELAY}:notaport|alice|{SECRET}"),
        ("smtproutes", f"example.com:{RELAY}:25|alice{SECRET}"),
        ("smtproutes", f"example.com:{RELAY} alice {SECRET} extra"),
        ("smtproutes", f"example.com:[{RELAY}|alice|{SECRET}"),
        ("smtproutes", f"example.com:|alice|{SECRET}"),
        ("smtpauth", f"{RELAY} user=alice password={SECRET} mech=BOGUS"),
        ("smtpauth", f"{RELAY} password={SECRET}"),
        ("smtpauth", f"{RELAY} alice {SECRET}"),
        ("smtpauth", f"{RELAY}:x{SECRET} user=alice password=x"),
        ("authsenders", f"a@example.org:{RELAY}:{SECRET}|alice|{SECRET}"),
    ],
)
def test_a_malformed_line_never_shows_its_password(home, zone, tmp_path, ca, trusted, file, line):
    if file == "smtpauth":
        home.write("smtproutes", f"example.com:{RELAY}\n")
    home.write(file, line + "\n")
    run = send(home, trusted)
    assert run.qmail.startswith(b"Z"), run.qmail
    assert SECRET.encode() not in run.output, run.output
    check = home.qremote("check", "--user", "root")
    assert check.returncode == 1 and f"control/{file}" in check.stdout
    assert SECRET not in check.stdout + check.stderr


# -- per-sender relays -------------------------------------------------------------------


def test_authsenders_picks_relay_and_account_by_sender(home, zone, tmp_path, ca, trusted):
    accounts = {b"alice": b"pw-a", b"bob": b"pw-b", b"site": b"pw-s"}
    with relay(tmp_path, ca, zone, accounts=accounts) as srv, ScriptedServer() as direct:
        home.write(
            "authsenders",
            f"a@example.org:{RELAY}:25|alice|pw-a\n"
            f"@b.example:{RELAY} bob pw-b\n"
            f".c.example:{RELAY}|site|pw-s\n"
            f":{RELAY}|site|pw-s\n",
        )
        home.write("smtproutes", f"example.com:{direct.ip}\n")
        send(home, trusted, "a@example.org")
        send(home, trusted, "x@b.example")
        send(home, trusted, "y@mail.c.example")
        send(home, trusted, "")  # a bounce: the default line
        logins = [r.login for r in srv.received]
        assert logins == [b"alice", b"bob", b"site", b"site"]
        # An empty relay for a sender: smtproutes decides.
        home.write("authsenders", f"nobody@example.org:\n:{RELAY}|site|pw-s\n")
        run = send(home, trusted, "nobody@example.org")
        assert run.qmail.startswith(b"K") and len(direct.received) == 1


def test_a_relay_is_its_own_mx_group(home, zone, tmp_path, ca, trusted):
    """The destination's @domain rule does not hold back mail that goes to the relay."""
    import asyncio

    from qremote.groups import caps
    from qremote.groups.rules import Group

    home.write("mxgroups", "dest:1:@example.com\n")
    home.write("mxgroupwait", "0\n")
    held = asyncio.run(caps.take(home.path, None, Group("dest", 1), 0.0))
    assert held.slot is not None  # the destination's only slot, held by "another delivery"
    try:
        with relay(tmp_path, ca, zone):
            home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
            run = send(home, trusted)
    finally:
        held.slot.release()
    assert run.qmail.startswith(b"K"), run.qmail


# -- qremote check -------------------------------------------------------------------------


def test_check_warns_about_passwords_anyone_can_read(home):
    home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
    os.chmod(os.path.join(home.control, "smtproutes"), 0o644)
    home.write("smtpauth", f"{RELAY} user=alice password=x\n")
    os.chmod(os.path.join(home.control, "smtpauth"), 0o600)
    out = home.qremote("check", "--user", "root").stdout
    assert "control/smtproutes holds passwords and anyone can read it (mode 0644)" in out
    assert "control/smtpauth holds" not in out


def test_check_names_an_unknown_mechanism(home):
    home.write("smtpauth", f"{RELAY} mech=DIGEST-MD5\n")
    out = home.qremote("check", "--user", "root").stdout
    assert "control/smtpauth line 1 (for relay.example.net): mech='DIGEST-MD5' is not one of" in out


def test_check_route_logs_in_without_sending(home, zone, tmp_path, ca, trusted, monkeypatch):
    for name, value in trusted.items():
        monkeypatch.setenv(name, value)
    with relay(tmp_path, ca, zone) as srv:
        home.write("smtproutes", f"example.com:{RELAY}|alice|{PASSWORD.decode()}\n")
        good = home.qremote("check", "--route", "b@example.com", "--sender", "a@example.org")
        home.write("smtproutes", f"example.com:{RELAY}|alice|wrong\n")
        bad = home.qremote("check", "--route", "b@example.com")
    assert good.returncode == 0, good
    assert "Authenticated as alice (SCRAM-SHA-256) over TLSv1.3." in good.stdout
    for step in ("connecting to", "waiting for the greeting", "STARTTLS sent", "TLS established",
                 "AUTH sent, waiting for the relay's answer"):  # fmt: skip
        assert step in good.stdout, step
    assert bad.returncode == 1 and "authentication as alice (SCRAM-SHA-256) failed" in bad.stdout
    assert not srv.received
    assert all(not any(c.startswith("MAIL") for c in conn.commands) for conn in srv.connections)


# -- qremoted: kept connections stay with their account --------------------------------------


def test_qremoted_reuses_a_connection_only_for_the_same_account(
    home, zone, tmp_path, ca, trusted, monkeypatch
):
    from tests.support.daemon import Qremoted

    for name, value in trusted.items():
        monkeypatch.setenv(name, value)  # qremoted's environment: its system CAs
    accounts = {b"alice": b"pw-a", b"bob": b"pw-b"}
    with relay(tmp_path, ca, zone, accounts=accounts) as srv, Qremoted(home):
        home.write("authsenders", f"@a.example:{RELAY}|alice|pw-a\n@b.example:{RELAY}|bob|pw-b\n")
        runs = [send(home, {}, s) for s in ("x@a.example", "y@a.example", "x@b.example")]
        runs.append(send(home, {}, "y@b.example"))
    assert all(r.qmail.startswith(b"K") for r in runs), [r.qmail for r in runs]
    assert [b"Reused" in r.output for r in runs] == [False, True, False, True]
    assert all(b"Authenticated as " in r.output for r in runs)
    assert [r.login for r in srv.received] == [b"alice", b"alice", b"bob", b"bob"]
    assert len(srv.connections) == 2 and srv.auth_attempts == [
        ("SCRAM-SHA-256", b"alice", True),
        ("SCRAM-SHA-256", b"bob", True),
    ]


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_qremoted_resumes_the_relays_tls_session(
    home, zone, tmp_path, ca, trusted, monkeypatch, implicit
):
    from tests.support.daemon import Qremoted

    for name, value in trusted.items():
        monkeypatch.setenv(name, value)
    home.write("reuseidle", "0\n")  # a new connection each time
    tls = {"implicit_tls" if implicit else "tls_context": relay_tls(tmp_path, ca)}
    port = 465 if implicit else 25
    with relay(tmp_path, ca, zone, port=port, **tls) as srv, Qremoted(home):
        home.write("smtproutes", f"example.com:{RELAY}:{port}|alice|{PASSWORD.decode()}\n")
        first, second = send(home, {}), send(home, {})
    assert first.qmail.startswith(b"K") and second.qmail.startswith(b"K")
    assert b", verified\n" in first.output and b", verified, resumed\n" in second.output
    assert [r.login for r in srv.received] == [b"alice", b"alice"]


def test_check_route_says_each_step_and_where_a_silent_relay_stopped_it(home, zone):
    """A relay that takes the connection and never speaks: check says what it is doing as
    it goes and gives up after the delivery's own time-out (timeoutremote), saying where."""
    import socket
    import time

    from tests.support.smtpserver import fresh_ip

    ip = fresh_ip()
    home.write("timeoutremote", "2\n")
    home.write("smtproutes", f"example.com:{RELAY}\n")
    with socket.socket() as silent:
        silent.bind((ip, 25))
        silent.listen()
        zone.a(RELAY, ip)
        started = time.monotonic()
        done = home.qremote("check", "--route", "b@example.com")
        took = time.monotonic() - started
    assert done.returncode == 1 and took < 15, done
    lines = done.stdout.splitlines()
    assert "timeoutremote 2s per reply" in lines[0]
    assert lines[1].endswith(f"connecting to {ip} port 25 ({RELAY})")
    assert lines[2].endswith("waiting for the greeting")
    assert "failed" in done.stdout
