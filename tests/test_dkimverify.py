"""qremote-dkimverify as qmail-smtpd runs it: every signature gets the right RFC 8601
result, forged verdicts are renamed, the envelope passes byte-identical, the message
only gains one header, and nothing is ever lost.

Every test runs through both paths: the Python filter verifying in-process, and the
compiled thin filter handing the message to a running verifying daemon (``qremote
verifyd``, as qmail-smtpd's user when the tests run as root). Both must give the same
bytes and the same exit codes."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from qremote.signing import dkim as qdkim
from qremote.signing.keys import KeyStore
from qremote.signing.sign import SignConfig, sign_message
from tests.support import keys, qmailhome
from tests.support.queue import StandInQueue
from tests.support.verifyd import Verifyd, build_filter

HERE = os.path.dirname(os.path.abspath(__file__))
ENVELOPE = b"Falice@example.com\0Tbob@example.net\0Tcarol@example.net\0\0"
MSG = (
    b"From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: hello\n"
    b"Date: Sun, 22 Nov 2026 12:00:00 +0000\n\nHello Bob.\n"
)


@pytest.fixture(scope="module")
def thin_filter(tmp_path_factory):
    return build_filter(str(tmp_path_factory.mktemp("thinfilter")))


@pytest.fixture
def home(dns_server, zone):
    """A qmail home the daemon's user can read (pytest's own folders are root's alone)."""
    top = tempfile.mkdtemp(prefix="qremote-verify-test-")
    os.chmod(top, 0o755)
    yield qmailhome.make(os.path.join(top, "qmail"), dns_server.address)
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(params=["in-process", "verifyd"])
def queue(request, tmp_path, home, thin_filter):
    """The stand-in qmail-queue, reached through the in-process filter or through the
    thin filter and a running verifying daemon."""
    q = StandInQueue(str(tmp_path))
    if request.param == "in-process":
        yield q
        return
    q.command = [thin_filter]
    with Verifyd(home.path) as daemon:
        yield q
        assert "Traceback" not in daemon.log()


@pytest.fixture
def site(home, zone):
    """A receiving site (authserv-id mx.example.org) and a sender's key store."""
    home.write("me", "mx.example.org\n")
    sender = os.path.join(home.path, "sender-control")
    rsa = keys.write_key(sender, "example.com", "s1")
    ed = keys.write_key(sender, "example.com", "s1e", "ed25519", "ed25519")
    keys.publish(zone, "example.com", "s1", rsa)
    keys.publish(zone, "example.com", "s1e", ed)
    home.signer = KeyStore(os.path.join(sender, "domainkeys"))
    home.rsa = rsa
    return home


def ours(site, message=MSG, **config) -> bytes:
    signed = sign_message(message, b"alice@example.com", site.signer, SignConfig(**config))
    return signed.headers + message


def ar_of(queued) -> bytes:
    assert queued.message is not None
    head = queued.message.split(b"\n\n", 1)[0]
    first, _, _ = head.partition(b"\nX")
    lines = head.split(b"\n")
    assert lines[0].startswith(b"Authentication-Results: mx.example.org;")
    field = [lines[0]]
    for line in lines[1:]:
        if line[:1] != b"\t":
            break
        field.append(line)
    return b"\n".join(field) + b"\n"


def results(queued) -> list[str]:
    text = ar_of(queued).decode()
    return [part.strip().split(" ")[0] for part in text.split(";")[1:]]


def test_our_signatures_pass_and_the_rest_is_byte_identical(site, queue):
    message = ours(site)
    q = queue.run(site.path, message, ENVELOPE)
    assert q.status == 0, q.log
    assert q.envelope == ENVELOPE
    header = ar_of(q)
    assert q.message == header + message
    assert header == (
        b"Authentication-Results: mx.example.org;\n"
        b"\tdkim=pass header.d=example.com header.i=@example.com header.s=s1e"
        b" header.a=ed25519-sha256;\n"
        b"\tdkim=pass header.d=example.com header.i=@example.com header.s=s1"
        b" header.a=rsa-sha256;\n"
        b"\tdomainkeys=pass header.d=example.com header.s=s1 header.a=rsa-sha1"
        b" header.from=example.com\n"
    )


def test_dkimpy_signature_passes(site, queue):
    pem = site.rsa.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    sig = dkim.sign(MSG.replace(b"\n", b"\r\n"), b"s1", b"example.com", pem)
    q = queue.run(site.path, sig.replace(b"\r\n", b"\n") + MSG, ENVELOPE)
    assert results(q) == ["dkim=pass"]


def test_mail_dkim_signatures_pass(site, queue, tmp_path):
    keyfile = tmp_path / "perl-key.pem"
    keyfile.write_bytes(
        site.rsa.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    signed = subprocess.run(
        ["perl", os.path.join(HERE, "support", "sign_dkim.pl"), str(keyfile), "example.com", "s1"],
        input=MSG,
        capture_output=True,
        check=True,
    ).stdout
    q = queue.run(site.path, signed, ENVELOPE)
    assert sorted(results(q)) == ["dkim=pass", "domainkeys=pass"]


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.replace(b"Hello Bob.", b"Hello Eve."),
        lambda m: m.replace(b"Subject: hello", b"Subject: HELLO"),
    ],
    ids=["body", "header"],
)
def test_altered_messages_fail(site, queue, change):
    q = queue.run(site.path, change(ours(site)), ENVELOPE)
    assert results(q) == ["dkim=fail", "dkim=fail", "domainkeys=fail"]


def test_expired_signature_is_policy_not_fail(site, queue):
    """RFC 8601 keeps ``fail`` for signatures that did not verify; an expired one is a
    signature we do not accept (``policy``), with the reason."""
    signed = sign_message(
        MSG,
        b"alice@example.com",
        site.signer,
        SignConfig(dkim=qdkim.Options(expire_after=60), domainkeys=False),
        now=int(time.time()) - 86400,
    )
    q = queue.run(site.path, signed.headers + MSG, ENVELOPE)
    assert results(q) == ["dkim=policy", "dkim=policy"]
    assert b"dkim=policy (signature expired, x= has passed)" in ar_of(q)


def test_revoked_key_is_a_permanent_error(site, zone, queue):
    zone.records[("s1._domainkey.example.com", "TXT")] = ['"v=DKIM1; k=rsa; p="']
    q = queue.run(site.path, ours(site, domainkeys=True), ENVELOPE)
    r = results(q)
    assert r[1] == "dkim=permerror" and r[2] == "domainkeys=permerror"
    assert b"revoked" in ar_of(q)


def test_missing_key_is_a_permanent_error(site, zone, queue):
    del zone.records[("s1e._domainkey.example.com", "TXT")]
    q = queue.run(site.path, ours(site), ENVELOPE)
    assert results(q)[0] == "dkim=permerror"


def test_dns_time_out_is_a_temporary_error_and_the_message_is_queued(site, zone, queue):
    site.write("dkimverifytimeout", "2\n")
    zone.drop.update({"s1._domainkey.example.com", "s1e._domainkey.example.com"})
    q = queue.run(site.path, ours(site), ENVELOPE)
    assert q.status == 0
    assert results(q) == ["dkim=temperror", "dkim=temperror", "domainkeys=temperror"]


def test_too_short_key_is_refused(site, zone, queue, tmp_path):
    key = tmp_path / "short.pem"
    subprocess.run(
        ["openssl", "genrsa", "-traditional", "-out", str(key), "512"],
        check=True,
        capture_output=True,
    )
    pub = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    zone.add(
        "short._domainkey.example.com",
        "TXT",
        f'"v=DKIM1; k=rsa; p={base64.b64encode(pub).decode()}"',
    )
    signed = subprocess.run(
        ["perl", os.path.join(HERE, "support", "sign_dkim.pl"), str(key), "example.com", "short"],
        input=MSG,
        capture_output=True,
        check=True,
    ).stdout
    q = queue.run(site.path, signed, ENVELOPE)
    assert sorted(results(q)) == ["dkim=permerror", "domainkeys=permerror"]


def test_no_signature_is_none(site, queue):
    q = queue.run(site.path, MSG, ENVELOPE)
    assert ar_of(q) == b"Authentication-Results: mx.example.org;\n\tdkim=none\n"
    assert q.message == ar_of(q) + MSG


def test_forged_verdict_claiming_our_id_is_renamed(site, queue):
    forged = (
        b"Authentication-Results: MX.example.org (forged);\n\tdkim=pass header.d=bank.example\n"
        b"Authentication-Results: other.example; dkim=pass\n"
    )
    q = queue.run(site.path, forged + MSG, ENVELOPE)
    body = q.message[len(ar_of(q)) :]
    assert (
        body == b"X-Original-" + forged.split(b"\n\tdkim")[0] + b"\n\tdkim=pass "
        b"header.d=bank.example\nAuthentication-Results: other.example; dkim=pass\n" + MSG
    )


def test_authservid_file_wins_over_me(site, queue):
    site.write("authservid", "verify.example.org\n")
    q = queue.run(site.path, MSG, ENVELOPE)
    assert q.message.startswith(b"Authentication-Results: verify.example.org;\n")


@pytest.mark.parametrize(
    "message",
    [
        b" leading: whitespace line\nFrom: a@example.com\n\nbody\n",
        b"Subject : spaced\nDKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; b=; bh=\n"
        b"From: a@example.com\n\nbody\n",
    ],
    ids=["leading whitespace", "space before colon"],
)
def test_malformed_messages_are_queued(site, queue, message):
    q = queue.run(site.path, message, ENVELOPE)
    assert q.status == 0 and q.envelope == ENVELOPE
    assert q.message.endswith(message)


def test_a_crash_passes_the_message_unchanged(site, queue):
    site.write("dkimverifypolicy", "this is not a rule\n")
    message = ours(site)
    q = queue.run(site.path, message, ENVELOPE)
    assert q.status == 0
    assert q.message == message and q.envelope == ENVELOPE
    assert "passed on unchanged" in q.log


def test_qmail_queue_exit_code_is_ours(site, tmp_path):
    q = StandInQueue(str(tmp_path), exit_code=53).run(site.path, MSG, ENVELOPE)
    assert q.status == 53 and q.message is not None


def test_policy_rejects_unsigned_mail_from_a_listed_domain(site, queue):
    site.write("dkimverifypolicy", "# protect\nexample.com:reject\n")
    q = queue.run(site.path, MSG, ENVELOPE)
    assert q.status == 31 and q.message is None
    assert "reject: no valid DKIM signature of example.com on mail from example.com" in q.log


def test_policy_lets_signed_mail_through(site, queue):
    site.write("dkimverifypolicy", "example.com:reject\n")
    q = queue.run(site.path, ours(site), ENVELOPE)
    assert q.status == 0 and results(q)[0] == "dkim=pass"


def test_policy_defers_instead_of_rejecting_on_dns_trouble(site, zone, queue):
    site.write("dkimverifypolicy", "example.com:reject\n")
    site.write("dkimverifytimeout", "1\n")
    zone.drop.update({"s1._domainkey.example.com", "s1e._domainkey.example.com"})
    q = queue.run(site.path, ours(site), ENVELOPE)
    assert q.status == 71 and q.message is None


def test_large_message_is_passed_whole(site, queue):
    big = MSG + b"0123456789abcdef" * 4 + b"\n"
    big = big + (b"x" * 999 + b"\n") * 30000  # about 30 MB
    message = ours(site, big)
    q = queue.run(site.path, message, ENVELOPE)
    assert q.status == 0
    assert q.message == ar_of(q) + message
    assert results(q) == ["dkim=pass", "dkim=pass", "domainkeys=pass"]


def test_utf8_headers_and_an_idn_signer(home, zone, queue):
    """An RFC 6532 message signed by an IDN (d= in A-labels, keys kept under the U-label
    name): the filter verifies it like any other."""
    home.write("me", "mx.example.org\n")
    sender = os.path.join(home.path, "sender-control")
    key = keys.write_key(sender, "exämple.de", "s1")
    keys.publish(zone, "xn--exmple-cua.de", "s1", key)
    message = (
        "From: Jörg <joerg@exämple.de>\nTo: bob@example.net\nSubject: Grüße aus München\n"
        "Date: Sun, 22 Nov 2026 12:00:00 +0000\n\nHallo Bob.\n"
    ).encode()
    store = KeyStore(os.path.join(sender, "domainkeys"))
    signed = sign_message(message, "joerg@exämple.de".encode(), store, SignConfig())
    q = queue.run(home.path, signed.headers + message, ENVELOPE)
    assert q.status == 0, q.log
    verdicts = ar_of(q).decode()
    assert "dkim=pass header.d=xn--exmple-cua.de" in verdicts, verdicts
