"""IDN forms and the SMTPUTF8 plan without sockets."""

from __future__ import annotations

import pytest

from qremote.intl.envelope import plan_envelope
from qremote.intl.idn import IdnError, ascii_address, ascii_domain, key


def test_a_label_forms():
    assert ascii_domain("exämple.de") == "xn--exmple-cua.de"
    assert ascii_domain("EXÄMPLE.DE") == "xn--exmple-cua.de"  # UTS #46 maps case
    assert ascii_domain("例子.广告") == "xn--fsqu00a.xn--4rr70v"
    assert ascii_domain("Example.COM") == "example.com"
    assert ascii_domain("_dmarc.example.com") == "_dmarc.example.com"
    for bad in ("a\u200db.example", "xn--.example\u00e4", "\udcff.example"):
        with pytest.raises(IdnError):
            ascii_domain(bad)


def test_control_file_keys():
    assert key(".exämple.de") == ".xn--exmple-cua.de"
    assert key("@exämple.de") == "@xn--exmple-cua.de"
    assert key("Ana@Exämple.de") == "ana@xn--exmple-cua.de"
    assert key("") == ""
    assert key("a\u200db.example") == "a\u200db.example"  # unusable: matches only itself


def test_addresses_downgrade_only_their_domain():
    assert ascii_address("bob@exämple.de".encode()) == b"bob@xn--exmple-cua.de"
    assert ascii_address(b"bob@example.de") == b"bob@example.de"
    assert ascii_address("josé@example.de".encode()) is None
    assert ascii_address(b"") == b""


def test_plan_ascii_needs_nothing():
    chosen = plan_envelope(b"a@x.org", [b"b@y.org"], False, False)
    assert not chosen.smtputf8 and chosen.recipients == [b"b@y.org"]


def test_plan_with_smtputf8_offered_sends_as_given():
    rcpt = "josé@exämple.de".encode()
    chosen = plan_envelope(b"a@x.org", [rcpt], False, True)
    assert chosen.smtputf8 and chosen.recipients == [rcpt]
    assert plan_envelope(b"a@x.org", [b"b@y.org"], True, True).smtputf8  # UTF-8 headers


def test_plan_without_smtputf8():
    jose, bob = "josé@exämple.de".encode(), "bob@exämple.de".encode()
    chosen = plan_envelope(b"a@x.org", [jose, bob], False, False)
    assert chosen.recipients == [None, b"bob@xn--exmple-cua.de"] and chosen.refusal is None
    no_ascii = plan_envelope(b"a@x.org", [jose], False, False)
    assert no_ascii.refusal == "no recipient's address is ASCII"
    assert plan_envelope(jose, [bob], False, False).refusal == "the sender's address is not ASCII"
    assert plan_envelope(b"a@x.org", [b"b@y.org"], True, False).refusal == (
        "the message's header fields are not ASCII"
    )
    relaxed = plan_envelope(b"a@x.org", [b"b@y.org"], True, False, strict_headers=False)
    assert relaxed.refusal is None and relaxed.raw_headers
