"""Signatures made by qremote verify under dkimpy and Perl's Mail::DKIM, with the keys
served by the loopback DNS server; altered messages fail under both; broken keys and
unparseable messages are deferred, never sent unsigned."""

from __future__ import annotations

import os
import time

import pytest

from qremote.signing import dkim as qdkim
from qremote.signing import signatures
from qremote.signing.keys import KeyStore
from qremote.signing.sign import SignConfig, SigningError, sign_message
from tests.support import keys, verifiers
from tests.support.smtpserver import ScriptedServer

PLAIN = (
    b"From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: hello\n"
    b"Date: Sun, 22 Nov 2026 12:00:00 +0000\nMessage-ID: <1@example.com>\n\nHello Bob.\n"
)

ODD_MESSAGES = {
    "folded headers": b"From: Alice\n <alice@example.com>\nSubject: a\n\tfolded  subject \nTo:"
    b" bob@example.net\n\nbody\n",
    "repeated headers": b"From: alice@example.com\nTo: a@example.net\nTo: b@example.net\n"
    b"Received: x\nReceived: y\nSubject: s\n\nbody\n",
    "trailing white space": b"From: alice@example.com  \nSubject: s \t\n\nline \t \n\n \n",
    "empty body": b"From: alice@example.com\nSubject: nothing\n\n",
    "no body at all": b"From: alice@example.com\nSubject: nothing\n",
    "very long lines": b"From: alice@example.com\nSubject: "
    + b"s" * 1200
    + b"\n\n"
    + b"x" * 5000
    + b"\n",
    "8-bit body": "From: alice@example.com\nSubject: s\nContent-Type: text/plain; "
    "charset=utf-8\n\nGr\u00fc\u00dfe, na\u00efve caf\u00e9\n".encode(),
    "leading dots": b"From: alice@example.com\nSubject: s\n\n.\n..\n.x\n",
    "crlf already": b"From: alice@example.com\r\nSubject: s\r\n\r\nbody\r\n",
}


@pytest.fixture
def signer(tmp_path, zone):
    control = tmp_path / "control"
    rsa = keys.write_key(str(control), "example.com", "q2026", "rsa")
    ed = keys.write_key(str(control), "example.com", "q2026e", "ed25519", "ed25519")
    keys.publish(zone, "example.com", "q2026", rsa)
    keys.publish(zone, "example.com", "q2026e", ed)
    return KeyStore(str(control / "domainkeys"))


def sign(store, message, sender=b"alice@example.com", **config):
    signed = sign_message(message, sender, store, SignConfig(**config))
    return signed, signed.headers + message


@pytest.mark.parametrize("name", sorted(ODD_MESSAGES))
@pytest.mark.parametrize(
    "dkim_c", ["relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"]
)
@pytest.mark.parametrize("dk_c", ["nofws", "simple"])
def test_every_canonicalization_verifies_under_both(signer, dns_server, name, dkim_c, dk_c):
    header_c, body_c = dkim_c.split("/")
    signed, message = sign(
        signer, ODD_MESSAGES[name], dkim=qdkim.Options(header_c, body_c), dk_canon=dk_c
    )
    assert signed.note.startswith("Signed: DKIM d=example.com s=q2026 rsa-sha256")
    assert verifiers.dkimpy(message, dns_server.ip, dns_server.port) == [True, True]
    results = verifiers.mail_dkim(message, dns_server.ip, dns_server.port)
    by_kind = {(kind, sel): detail for kind, _, sel, detail in results}
    assert by_kind[("dkim", "q2026")] == "pass"
    if name == "folded headers":
        # A folded From: cannot carry a DomainKeys identity: no DK signature is made.
        assert ("domainkeys", "q2026") not in by_kind
        assert "DomainKeys" not in signed.note
    else:
        assert by_kind[("domainkeys", "q2026")] == "pass"


@pytest.mark.parametrize("dk_c", ["nofws", "simple"])
def test_a_partial_final_line_is_signed_as_it_will_be_sent(signer, dns_server, dk_c):
    """qmail-remote refuses such a message, but ``qremote sign`` may be handed one; any
    transfer ends its last line, and that is what the receiver verifies."""
    signed, message = sign(
        signer, b"From: alice@example.com\nSubject: s\n\nno line end", dk_canon=dk_c
    )
    sent = message + b"\n"
    assert verifiers.dkimpy(sent, dns_server.ip, dns_server.port) == [True, True]
    results = verifiers.mail_dkim(sent, dns_server.ip, dns_server.port)
    by_kind = {(kind, sel): detail for kind, _, sel, detail in results}
    assert by_kind[("dkim", "q2026")] == "pass"
    assert by_kind[("domainkeys", "q2026")] == "pass"


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.replace(b"Hello Bob.", b"Hello Eve."),
        lambda m: m.replace(b"Subject: hello", b"Subject: hellO"),
        lambda m: m.replace(b"To: bob", b"To: eve"),
    ],
    ids=["body", "subject", "to"],
)
def test_altered_messages_fail_under_both(signer, dns_server, change):
    _, message = sign(signer, PLAIN)
    altered = change(message)
    assert altered != message
    assert verifiers.dkimpy(altered, dns_server.ip, dns_server.port) == [False, False]
    results = verifiers.mail_dkim(altered, dns_server.ip, dns_server.port)
    assert [detail.split()[0] for kind, _, _, detail in results if "ed25519" not in detail] == [
        "fail",
        "fail",
    ]


def test_added_from_header_breaks_the_oversigned_signature(signer, dns_server):
    _, message = sign(signer, PLAIN)
    head, sep, body = message.partition(b"\n\n")
    forged = head + b"\nFrom: mallory@example.org" + sep + body
    assert verifiers.dkimpy(forged, dns_server.ip, dns_server.port) == [False, False]


def test_domainkeys_signs_as_the_sender_header_domain(tmp_path, zone, dns_server):
    control = tmp_path / "control"
    keys.publish(zone, "example.com", "a", keys.write_key(str(control), "example.com", "a"))
    keys.publish(
        zone, "lists.example.org", "b", keys.write_key(str(control), "lists.example.org", "b")
    )
    store = KeyStore(str(control / "domainkeys"))
    msg = b"From: alice@example.com\nSender: list@lists.example.org\nSubject: s\n\nbody\n"
    signed, message = sign(store, msg)
    assert signed.note == (
        "Signed: DKIM d=example.com s=a rsa-sha256; DomainKeys d=lists.example.org s=b rsa-sha1."
    )
    results = verifiers.mail_dkim(message, dns_server.ip, dns_server.port)
    assert sorted((k, d, r) for k, d, _, r in results) == [
        ("dkim", "example.com", "pass"),
        ("domainkeys", "lists.example.org", "pass"),
    ]


def test_no_domainkeys_when_the_sender_domain_has_no_key(tmp_path, zone):
    control = tmp_path / "control"
    keys.write_key(str(control), "example.com", "a")
    store = KeyStore(str(control / "domainkeys"))
    msg = b"From: alice@example.com\nSender: x@elsewhere.net\n\nbody\n"
    signed, _ = sign(store, msg)
    assert signed.note == "Signed: DKIM d=example.com s=a rsa-sha256."


def test_parent_domain_key_and_plain_default_file(tmp_path, zone, dns_server):
    control = tmp_path / "control"
    key = keys.write_key(str(control), "example.com", "default", link=None)
    os.rename(
        control / "domainkeys" / "example.com" / "default.pem",
        control / "domainkeys" / "example.com" / "default",
    )
    keys.publish(zone, "example.com", "default", key)
    store = KeyStore(str(control / "domainkeys"))
    signed, message = sign(store, b"From: a@mail.example.com\nSubject: s\n\nbody\n")
    assert signed.note.startswith("Signed: DKIM d=example.com s=default rsa-sha256")
    assert verifiers.dkimpy(message, dns_server.ip, dns_server.port) == [True]


def test_site_wide_default_key_signs_as_the_from_domain(tmp_path, zone, dns_server):
    control = tmp_path / "control"
    key = keys.write_key(str(control), "unused", "site", link=None)
    os.makedirs(control / "domainkeys", exist_ok=True)
    os.rename(control / "domainkeys" / "unused" / "site.pem", control / "domainkeys" / "site.pem")
    os.symlink("site.pem", control / "domainkeys" / "default")
    keys.publish(zone, "customer.net", "site", key)
    store = KeyStore(str(control / "domainkeys"))
    signed, message = sign(store, b"From: x@customer.net\nSubject: s\n\nbody\n", b"x@customer.net")
    assert signed.note == (
        "Signed: DKIM d=customer.net s=site rsa-sha256; DomainKeys d=customer.net s=site rsa-sha1."
    )
    assert verifiers.dkimpy(message, dns_server.ip, dns_server.port) == [True]


def test_traditional_rsa_pem_is_accepted(tmp_path, zone, dns_server):
    control = tmp_path / "control"
    key = keys.write_key(str(control), "example.com", "old", traditional=True)
    keys.publish(zone, "example.com", "old", key)
    _, message = sign(KeyStore(str(control / "domainkeys")), PLAIN)
    assert verifiers.dkimpy(message, dns_server.ip, dns_server.port) == [True]


def test_missing_key_means_unsigned_and_says_so(tmp_path):
    signed, message = sign(KeyStore(str(tmp_path / "none")), PLAIN)
    assert signed.headers == b"" and message == PLAIN
    assert signed.note == "Not signed: no key for example.com in control/domainkeys."


def test_a_file_where_a_domain_folder_belongs_holds_no_key(tmp_path):
    store = tmp_path / "control" / "domainkeys"
    store.mkdir(parents=True)
    (store / "example.com").write_bytes(b"not a folder\n")
    signed, message = sign(KeyStore(str(store)), PLAIN)
    assert signed.headers == b"" and message == PLAIN
    assert signed.note == "Not signed: no key for example.com in control/domainkeys."


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_readable_by_others_is_refused(tmp_path, mode):
    control = tmp_path / "control"
    keys.write_key(str(control), "example.com", "k", mode=mode)
    with pytest.raises(SigningError, match=r"readable by group or others .* chmod 600"):
        sign(KeyStore(str(control / "domainkeys")), PLAIN)


def test_unusable_keys_are_refused(tmp_path):
    control = tmp_path / "control"
    folder = control / "domainkeys" / "example.com"
    folder.mkdir(parents=True)
    (folder / "junk.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n")
    os.chmod(folder / "junk.pem", 0o600)
    os.symlink("junk.pem", folder / "default")
    with pytest.raises(SigningError, match="junk.pem is not a usable PEM private key"):
        sign(KeyStore(str(control / "domainkeys")), PLAIN)
    os.unlink(folder / "default")
    os.symlink("gone.pem", folder / "default")
    with pytest.raises(SigningError, match="default points to a missing file"):
        sign(KeyStore(str(control / "domainkeys")), PLAIN)


def test_odd_bytes_are_signed_deliberately(signer, dns_server):
    """Bare CR, NUL and 8-bit bytes in headers are signed as they will be transmitted."""
    message = (
        b"From: alice@example.com\nSubject: caf\xc3\xa9 \x00 nul\nTo: b@example.net\n\n"
        b"bare\rcr\nnul\x00byte\n"
    )
    _, signed = sign(signer, message)
    assert verifiers.dkimpy(signed, dns_server.ip, dns_server.port) == [True, True]


def test_message_without_from_signs_as_the_envelope_sender(signer, dns_server):
    signed, message = sign(signer, b"Subject: no from\n\nbody\n", b"bounce@example.com")
    assert "d=example.com" in signed.note and "DomainKeys" not in signed.note
    assert verifiers.dkimpy(message, dns_server.ip, dns_server.port) == [True, True]


# -- a message signed again (one delivery per recipient) ------------------------------------


SECOND = int(time.time()) - 60
"""When the copies below are signed: a past second (verifiers refuse a t= in the future)."""


def _fields(signed) -> dict[bytes, bytes]:
    """Each signature field of a signing, by name (one DKIM and one DomainKeys here)."""
    out = {}
    for field in signed.headers.replace(b"\n\t", b"\t").split(b"\n"):
        if field:
            out[field.split(b":", 1)[0]] = field
    return out


@pytest.fixture
def rsa_only(tmp_path, zone):
    control = tmp_path / "control"
    key = keys.write_key(str(control), "example.com", "q2026", "rsa")
    keys.publish(zone, "example.com", "q2026", key)
    return control


def test_a_copy_signed_again_in_the_same_second_carries_the_same_signatures(rsa_only, dns_server):
    """qmail-send starts one delivery per recipient: a second copy signed within the same
    second (DKIM's t=) gets the kept signatures, byte for byte, and they verify."""
    store = KeyStore(str(rsa_only / "domainkeys"))
    first = sign_message(PLAIN, b"alice@example.com", store, now=SECOND)
    again = sign_message(PLAIN, b"alice@example.com", store, now=SECOND)
    assert again.headers == first.headers
    assert verifiers.dkimpy(again.headers + PLAIN, dns_server.ip, dns_server.port) == [True]
    said = verifiers.mail_dkim(again.headers + PLAIN, dns_server.ip, dns_server.port)
    kinds = {kind: detail for kind, _, _, detail in said}
    assert kinds == {"dkim": "pass", "domainkeys": "pass"}


def test_a_kept_signature_is_returned_without_signing_again(rsa_only):
    """The same object comes back: no RSA operation was made for the repeat."""
    key = KeyStore(str(rsa_only / "domainkeys")).domain_keys("example.com")[0]
    data = b"the same canonical bytes"
    assert signatures.sign(key, data) is signatures.sign(key, data)
    assert signatures.sign(key, data, "sha1") is signatures.sign(key, data, "sha1")
    assert signatures.sign(key, data) != signatures.sign(key, data, "sha1")


def test_a_copy_signed_a_second_later_gets_a_new_dkim_signature_and_the_same_domainkey(
    rsa_only, dns_server
):
    store = KeyStore(str(rsa_only / "domainkeys"))
    first = _fields(sign_message(PLAIN, b"alice@example.com", store, now=SECOND))
    later = sign_message(PLAIN, b"alice@example.com", store, now=SECOND + 1)
    assert _fields(later)[b"DKIM-Signature"] != first[b"DKIM-Signature"]
    assert _fields(later)[b"DomainKey-Signature"] == first[b"DomainKey-Signature"]
    assert verifiers.dkimpy(later.headers + PLAIN, dns_server.ip, dns_server.port) == [True]


def test_a_replaced_key_never_answers_with_the_old_keys_signatures(rsa_only, zone, dns_server):
    """A rotated or rewritten key file signs anew even for the very same bytes and second."""
    store = KeyStore(str(rsa_only / "domainkeys"))
    old = _fields(sign_message(PLAIN, b"alice@example.com", store, now=SECOND))
    new_key = keys.write_key(str(rsa_only), "example.com", "q2026", "rsa")
    zone.records.pop(("q2026._domainkey.example.com", "TXT"), None)
    keys.publish(zone, "example.com", "q2026", new_key)
    new = sign_message(PLAIN, b"alice@example.com", store, now=SECOND)
    assert _fields(new)[b"DKIM-Signature"] != old[b"DKIM-Signature"]
    assert _fields(new)[b"DomainKey-Signature"] != old[b"DomainKey-Signature"]
    assert verifiers.dkimpy(new.headers + PLAIN, dns_server.ip, dns_server.port) == [True]


def test_kept_signatures_are_bounded_and_the_oldest_goes_first(rsa_only, monkeypatch):
    monkeypatch.setattr(signatures, "KEPT", 2)
    signatures.forget()
    key = KeyStore(str(rsa_only / "domainkeys")).domain_keys("example.com")[0]
    first = signatures.sign(key, b"one")
    second = signatures.sign(key, b"two")
    signatures.sign(key, b"three")
    assert signatures.sign(key, b"two") is second
    again = signatures.sign(key, b"one")
    assert again == first and again is not first


# -- through the installed qmail-remote -------------------------------------------------------


def install_keys(home, zone):
    rsa = keys.write_key(home.control, "example.com", "q2026", "rsa")
    ed = keys.write_key(home.control, "example.com", "q2026e", "ed25519", "ed25519")
    keys.publish(zone, "example.com", "q2026", rsa)
    keys.publish(zone, "example.com", "q2026e", ed)


def deliver(home, zone, message, sender="alice@example.com"):
    with ScriptedServer() as mx:
        zone.mx("example.net", (10, "mx.example.net"))
        zone.a("mx.example.net", mx.ip)
        run = home.deliver("example.net", sender, ["bob@example.net"], message)
    return mx, run


def test_delivered_message_passes_both_verifiers(home, zone, dns_server):
    install_keys(home, zone)
    mx, run = deliver(home, zone, PLAIN)
    assert run.status == 0 and run.qmail.startswith(b"K")
    assert run.reports[-1].endswith(
        b"Signed: DKIM d=example.com s=q2026 rsa-sha256; DKIM d=example.com s=q2026e "
        b"ed25519-sha256; DomainKeys d=example.com s=q2026 rsa-sha1.\n"
    )
    arrived = mx.received[0].content
    assert verifiers.dkimpy(arrived, dns_server.ip, dns_server.port) == [True, True]
    results = verifiers.mail_dkim(arrived, dns_server.ip, dns_server.port)
    assert {(k, r) for k, _, _, r in results if "ed25519" not in r} == {
        ("dkim", "pass"),
        ("domainkeys", "pass"),
    }


def test_bounces_are_signed_too(home, zone, dns_server):
    install_keys(home, zone)
    bounce = (
        b"From: MAILER-DAEMON@example.com\nTo: bob@example.net\nSubject: failure notice\n\n"
        b"Hi. This is the qmail-send program.\n"
    )
    mx, run = deliver(home, zone, bounce, sender="")
    assert run.qmail.startswith(b"K")
    assert verifiers.dkimpy(mx.received[0].content, dns_server.ip, dns_server.port) == [True, True]


def test_unusable_key_defers_instead_of_sending_unsigned(home, zone):
    install_keys(home, zone)
    os.chmod(os.path.join(home.control, "domainkeys", "example.com", "q2026.pem"), 0o644)
    mx, run = deliver(home, zone, PLAIN)
    assert run.output == (
        b"ZUnable to sign message: signing key unusable: "
        b"control/domainkeys/example.com/q2026.pem is readable by group or others (mode 0644);"
        b" chmod 600 it (#4.3.0)\n\0"
    )
    assert mx.connections == []


UNSIGNABLE = [
    (b"", "the message is empty"),
    (b" Subject: folded first line\n\nbody\n", "the first header line starts with white space"),
    (
        b"Received: from x by y\nFrom: alice@example.com\nthis is the body, no blank line\n",
        "header line 3 is not a header field: 'this is the body, no blank line'",
    ),
]


@pytest.mark.parametrize("message,why", UNSIGNABLE)
def test_message_that_cannot_be_signed_goes_out_unsigned_with_the_reason(home, zone, message, why):
    """No retry can ever sign it: qmail would send it, and so do we, saying why."""
    install_keys(home, zone)
    mx, run = deliver(home, zone, message)
    assert run.status == 0
    assert run.qmail == (
        b"K" + mx.ip.encode() + b" accepted message.\nRemote host said: 250 2.0.0 Ok: queued "
        b"as 1234\nNot signed: the message cannot be signed (" + why.encode() + b"); "
        b"sent unsigned.\n"
    )
    assert mx.received[0].content == message.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("message,why", UNSIGNABLE)
def test_message_that_cannot_be_signed_and_has_no_key_goes_out_as_qmail_sends_it(
    home, zone, message, why
):
    mx, run = deliver(home, zone, message, sender="alice@nokey.example")
    assert run.qmail.startswith(b"K")
    assert b"\nNot signed: no key for " in run.qmail  # the sender's, or the From: line's
    assert mx.received[0].content == message.replace(b"\n", b"\r\n")


def test_message_that_cannot_be_signed_bounces_when_the_site_says_so(home, zone):
    install_keys(home, zone)
    home.write("unsignable", "bounce\n")
    mx, run = deliver(home, zone, b" Subject: folded first line\n\nbody\n")
    assert run.output == (
        b"DThis message cannot be signed (the first header line starts with white space), "
        b"and control/unsignable says not to send it unsigned. (#5.6.0)\n\0"
    )
    assert mx.connections == []


def test_bounce_setting_never_touches_a_message_no_key_applies_to(home, zone):
    home.write("unsignable", "bounce\n")
    mx, run = deliver(home, zone, b"", sender="alice@nokey.example")
    assert run.qmail.startswith(b"K")


def test_unknown_unsignable_setting_is_a_control_file_error(home, zone):
    home.write("unsignable", "maybe\n")
    mx, run = deliver(home, zone, PLAIN)
    assert run.output == (
        b"ZUnable to read control files. (#4.3.0)\n"
        b"control/unsignable: 'maybe' is not send or bounce\n\0"
    )


def test_a_key_store_we_cannot_enter_defers(tmp_path, monkeypatch):
    """Run as root, the tests cannot lose permission for real: the kernel's answer is
    stood in for at the os.lstat boundary, for entries of the key store folder only."""
    control = tmp_path / "control"
    keys.write_key(str(control), "example.com", "k")
    folder = str(control / "domainkeys" / "example.com")
    real_lstat = os.lstat

    def lstat(path, *args, **kwargs):
        if os.path.dirname(str(path)) == folder:
            raise PermissionError(13, "Permission denied")
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    with pytest.raises(SigningError, match="domainkeys/example.com/default: Permission denied"):
        sign(KeyStore(str(control / "domainkeys")), PLAIN)


def test_a_replaced_or_withdrawn_key_is_not_kept_in_memory(rsa_only):
    """One key per entry in the process: the rotated key's private object goes when the
    new one is loaded, and rewriting the file again and again does not grow the cache."""
    from qremote.signing import keys as keys_module

    store = KeyStore(str(rsa_only / "domainkeys"))
    old = store.domain_keys("example.com")[0]
    for n in range(3):
        keys.write_key(str(rsa_only), "example.com", f"r{n}", "rsa")
        new = store.domain_keys("example.com")[0]
        assert new.selector == f"r{n}"
    ours = str(rsa_only)
    kept = [k for _ident, k in keys_module._cache.values() if k.path.startswith(ours)]
    assert all(k.key is not old.key for k in kept)
    assert len(kept) == 1
    for entry in (rsa_only / "domainkeys" / "example.com").iterdir():
        if entry.name == "default":
            entry.unlink()
    assert store.domain_keys("example.com") == []
    assert not [k for _i, k in keys_module._cache.values() if k.path.startswith(ours)]
