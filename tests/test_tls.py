"""STARTTLS per MX host as qmail-tls reads its control files, against aiosmtpd servers
with certificates made for the test: each policy with each outcome."""

from __future__ import annotations

import os
import ssl
import warnings

import pytest

from tests.support import certs
from tests.support.smtpserver import TLS_BREAK, Raw, Script, ScriptedServer

MSG = b"Subject: t\n\nbody\n"
MX = "mx.example.net"


@pytest.fixture(scope="module")
def ca():
    return certs.Authority.create()


def server_tls(tmp_path, cert_and_key, client_ca=None) -> ssl.SSLContext:
    ctx = certs.server_context(*cert_and_key, str(tmp_path / "server"))
    if client_ca is not None:
        ctx.load_verify_locations(cadata=client_ca.pem().decode())
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def deliver(home, zone, tls_context=None, script=None):
    with ScriptedServer(script, tls_context=tls_context) as mx:
        zone.mx("example.net", (10, MX))
        zone.a(MX, mx.ip)
        run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.status == 0
    return mx, run


def trust(home, ca, name=MX):
    home.write(f"tlshosts/{name}.pem", ca.pem().decode())


def test_opportunistic_tls_with_any_certificate(home, zone, tmp_path):
    mx, run = deliver(home, zone, server_tls(tmp_path, certs.self_signed("other.example")))
    assert run.qmail.startswith(b"K")
    assert b"\nTLS TLSv1.3 " in run.reports[-1] and run.reports[-1].endswith(b", not verified\n")
    [conn] = mx.connections
    assert conn.tls and [c.split()[0] for c in conn.commands][:3] == ["EHLO", "STARTTLS", "EHLO"]
    assert len(mx.received) == 1


def test_no_starttls_offered_means_plain_text(home, zone):
    mx, run = deliver(home, zone)
    assert run.qmail.startswith(b"K") and b"TLS" not in run.reports[-1]
    assert "STARTTLS" not in mx.connections[0].commands


def test_notlshosts_never_tries(home, zone, tmp_path):
    home.write(f"notlshosts/{MX}", "")
    mx, run = deliver(home, zone, server_tls(tmp_path, certs.self_signed(MX)))
    assert run.qmail.startswith(b"K") and b"TLS" not in run.reports[-1]
    assert not mx.connections[0].tls


def test_exhaustivelist_means_tls_only_with_a_pem(home, zone, tmp_path):
    home.write("tlshosts/exhaustivelist", "")
    mx, run = deliver(home, zone, server_tls(tmp_path, certs.self_signed(MX)))
    assert run.qmail.startswith(b"K") and not mx.connections[0].tls


def test_failed_handshake_is_retried_once_in_plain_text(home, zone, tmp_path):
    mx, run = deliver(
        home, zone, server_tls(tmp_path, certs.self_signed(MX)), Script(starttls=TLS_BREAK)
    )
    assert run.qmail.startswith(b"K")
    assert f"TLS to {mx.ip} failed (TLS handshake failed:".encode() in run.reports[-1]
    assert b"retried without TLS\n" in run.reports[-1]
    assert len(mx.connections) == 2 and "STARTTLS" not in mx.connections[1].commands
    assert len(mx.received) == 1


def test_starttls_refused_goes_on_in_plain_text(home, zone, tmp_path):
    mx, run = deliver(
        home,
        zone,
        server_tls(tmp_path, certs.self_signed(MX)),
        Script(starttls="454 4.7.0 TLS not available"),
    )
    assert run.qmail.startswith(b"K") and len(mx.connections) == 1


def test_data_injected_after_the_starttls_reply_is_refused(home, zone, tmp_path):
    injected = Raw(b"220 go ahead\r\n250 injected\r\n", "continue")
    mx, run = deliver(
        home, zone, server_tls(tmp_path, certs.self_signed(MX)), Script(starttls=injected)
    )
    assert (
        b"failed (server sent data after its STARTTLS reply); retried without TLS"
        in (run.reports[-1])
    )


def test_required_tls_verified_against_the_pem(home, zone, tmp_path, ca):
    trust(home, ca)
    mx, run = deliver(home, zone, server_tls(tmp_path, ca.issue(MX)))
    assert run.qmail.startswith(b"K")
    assert run.reports[-1].endswith(b", verified\n")
    assert mx.connections[0].tls


@pytest.mark.parametrize(
    "make_cert, reason",
    [
        (lambda ca: ca.issue("wrong.example.net"), b"Hostname mismatch"),
        (lambda ca: ca.issue(MX, expired=True), b"certificate has expired"),
        (lambda ca: certs.self_signed(MX), b"self-signed certificate"),
    ],
    ids=["wrong name", "expired", "self-signed"],
)
def test_required_tls_with_a_bad_certificate_is_temporary(
    home, zone, tmp_path, ca, make_cert, reason
):
    trust(home, ca)
    mx, run = deliver(home, zone, server_tls(tmp_path, make_cert(ca)))
    [report] = run.reports
    assert report.startswith(
        b"ZConnected to " + mx.ip.encode() + b" but TLS failed: certificate not accepted: "
    )
    assert reason in report
    assert len(mx.connections) == 1 and mx.received == []


def test_required_tls_without_starttls_offered(home, zone, ca):
    trust(home, ca)
    mx, run = deliver(home, zone)
    assert run.reports[0].startswith(
        b"ZConnected to "
        + mx.ip.encode()
        + b" but TLS is required and was not negotiated. (#4.7.0)\n"
    )
    assert mx.received == []


def test_required_tls_refused(home, zone, tmp_path, ca):
    trust(home, ca)
    mx, run = deliver(
        home, zone, server_tls(tmp_path, ca.issue(MX)), Script(starttls="454 4.7.0 no TLS for you")
    )
    assert run.reports[0].startswith(
        b"ZConnected to " + mx.ip.encode() + b" but STARTTLS was refused.\n"
        b"Remote host said: 454 4.7.0 no TLS for you\n"
    )
    assert mx.received == []


def test_required_tls_handshake_failure_has_no_plain_fallback(home, zone, tmp_path, ca):
    trust(home, ca)
    mx, run = deliver(home, zone, server_tls(tmp_path, ca.issue(MX)), Script(starttls=TLS_BREAK))
    assert run.reports[0].startswith(b"ZConnected to " + mx.ip.encode() + b" but TLS failed: ")
    assert len(mx.connections) == 1 and mx.received == []


def test_unreadable_pem_file_is_a_control_error(home, zone, tmp_path):
    home.write(f"tlshosts/{MX}.pem", "not a certificate\n")
    mx, run = deliver(home, zone, server_tls(tmp_path, certs.self_signed(MX)))
    assert run.output.startswith(
        b"ZUnable to read control files. (#4.3.0)\ncontrol/tlshosts/"
        + MX.encode()
        + b".pem: cannot load CA file: "
    )
    assert mx.connections == []


def test_client_certificate_is_offered(home, zone, tmp_path, ca):
    cert, key = ca.issue("me.example.org")
    home.write("clientcert.pem", (cert + key).decode())
    mx, run = deliver(home, zone, server_tls(tmp_path, certs.self_signed(MX), client_ca=ca))
    assert run.qmail.startswith(b"K")
    subject = dict(x[0] for x in mx.connections[0].client_cert["subject"])
    assert subject["commonName"] == "me.example.org"


def test_bad_cipher_list_skips_opportunistic_tls_and_says_so(home, zone, tmp_path):
    home.write("tlsclientciphers", "NO-SUCH-CIPHER\n")
    mx, run = deliver(home, zone, server_tls(tmp_path, certs.self_signed(MX)))
    assert run.qmail.startswith(b"K")
    assert b"\nTLS not tried: control/tlsclientciphers: " in run.reports[-1]
    assert not mx.connections[0].tls


def test_tls_files_are_found_by_mx_name_not_by_domain(home, zone, tmp_path):
    home.write("notlshosts/example.net", "")  # the domain, not the MX: no effect
    mx, run = deliver(home, zone, server_tls(tmp_path, certs.self_signed(MX)))
    assert mx.connections[0].tls
    assert os.path.exists(os.path.join(home.control, "notlshosts", "example.net"))


def test_cipher_list_is_applied(home, zone, tmp_path):
    home.write("tlsclientciphers", "ECDHE-ECDSA-AES128-GCM-SHA256\n")
    ctx = server_tls(tmp_path, certs.self_signed(MX))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # cipher lists do not govern TLS 1.3
    mx, run = deliver(home, zone, ctx)
    assert b"\nTLS TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256, not verified\n" in run.reports[-1]


def test_tls_below_1_2_is_not_spoken(home, zone, tmp_path):
    ctx = server_tls(tmp_path, certs.self_signed(MX))
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    mx, run = deliver(home, zone, ctx)
    # Opportunistic: the handshake fails, the message goes in plain text, the log says so.
    assert run.qmail.startswith(b"K")
    assert b"retried without TLS" in run.reports[-1]
    assert not any(c.tls for c in mx.connections)


def test_unreadable_tls_policy_is_an_error_not_plain_text(tmp_path, monkeypatch):
    """Run as root, permission cannot be lost for real: os.listdir answers EACCES here."""
    from qremote.control import ControlError
    from qremote.tls.policy import decide, read_policy_files

    real_listdir = os.listdir

    def listdir(path, *args, **kwargs):
        if str(path).endswith("/tlshosts"):
            raise PermissionError(13, "Permission denied")
        return real_listdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "listdir", listdir)
    control = tmp_path / "control"
    (control / "tlshosts").mkdir(parents=True)
    files = read_policy_files(str(control))
    with pytest.raises(ControlError, match=r"^control/tlshosts: Permission denied"):
        decide(files, MX)


def test_the_tls_policy_is_a_pure_decision_over_the_files_read():
    """The precedence table, without a file system: notlshosts, then tlshosts/<mx>.pem,
    then exhaustivelist, then opportunistic; a name that cannot be a file has no file."""
    from qremote.tls.policy import Mode, PolicyFiles, decide

    plain = frozenset({"plain.example", "both.example"})
    files = PolicyFiles("/c", plain, frozenset({"pin.example", "both.example"}))
    assert decide(files, "plain.example").mode is Mode.PLAIN
    assert decide(files, "both.example").mode is Mode.PLAIN
    assert decide(files, "PIN.example.").ca_file == "/c/tlshosts/pin.example.pem"
    assert decide(files, "other.example").mode is Mode.OPPORTUNISTIC
    assert decide(files, "../etc").mode is Mode.OPPORTUNISTIC
    exhaustive = PolicyFiles("/c", pinned=frozenset({"pin.example"}), exhaustive=True)
    assert decide(exhaustive, "other.example").mode is Mode.PLAIN
    assert decide(exhaustive, "pin.example").mode is Mode.REQUIRED


def test_a_context_is_built_again_when_its_files_change(tmp_path):
    """qremoted lives for months: a new client certificate or cipher list must take
    effect without a restart, and an unchanged one must not cost a rebuild."""
    from qremote.tls.contexts import context_for
    from qremote.tls.policy import Mode, Policy

    control = str(tmp_path)
    policy = Policy(Mode.OPPORTUNISTIC)
    first = context_for(control, policy)
    assert context_for(control, policy) is first
    (tmp_path / "tlsclientciphers").write_text("ECDHE+AESGCM\n")
    second = context_for(control, policy)
    assert second is not first
    assert all("GCM" in c["name"] for c in second.get_ciphers() if c["protocol"] != "TLSv1.3")
    cert, key = certs.self_signed("me.example.org")
    (tmp_path / "clientcert.pem").write_bytes(cert + key)
    assert context_for(control, policy) is not second
