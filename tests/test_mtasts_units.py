"""MTA-STS and TLS reporting without sockets: the TXT record and the policy file as RFC
8461 writes them, mx patterns, the result types, the report document, and which mail
is one of our TLS reports."""

from __future__ import annotations

import pytest

from qremote.mtasts.policy import StsError, parse_policy, parse_txt
from qremote.tlsrpt.record import result_type
from qremote.tlsrpt.report import HeaderError, build, is_tls_report, message
from qremote.tlsrpt.rua import parse_rua

GOOD = (
    "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
    "max_age: 604800\r\n"
)


def test_txt_needs_exactly_one_stsv1_record_with_an_id():
    assert parse_txt([b"v=STSv1; id=20160831085700Z;", b"other"]) == "20160831085700Z"
    for records in (
        [],
        [b"v=STSv1; id=a", b"v=STSv1; id=b"],
        [b"v=STSv1; id="],
        [b"v=STSv1; id=" + b"x" * 33],
    ):
        with pytest.raises(StsError):
            parse_txt(records)


def test_policy_fields():
    policy = parse_policy(GOOD)
    assert (policy.mode, policy.mx, policy.max_age) == (
        "enforce",
        ("mail.example.com", "*.example.net"),
        604800,
    )
    assert parse_policy(GOOD.replace("\r\n", "\n")).mx == policy.mx  # LF alone is fine


def test_mode_is_case_sensitive_as_rfc_8461_writes_it():
    """RFC 8461 section 3.2 writes every literal with RFC 7405's %s: case-sensitive."""
    with pytest.raises(StsError, match="mode must be written in lower case"):
        parse_policy(GOOD.replace("enforce", "ENFORCE"))
    with pytest.raises(StsError, match="version is not STSv1"):
        parse_policy(GOOD.replace("STSv1", "stsv1"))


@pytest.mark.parametrize(
    "text",
    [
        GOOD.replace("STSv1", "STSv2"),
        GOOD.replace("enforce", "strict"),
        GOOD.replace("604800", "31557601"),
        GOOD.replace("604800", "-1"),
        "version: STSv1\nmode: enforce\nmax_age: 1\n",  # no mx
        GOOD + "garbage line\n",
        GOOD.replace("mail.example.com", "mail example.com"),
    ],
)
def test_malformed_policies_are_refused(text):
    with pytest.raises(StsError, match="sts-policy-invalid"):
        parse_policy(text)


def test_mx_patterns_cover_one_label():
    policy = parse_policy(GOOD)
    assert policy.allows("mail.example.com") and policy.allows("MAIL.Example.COM.")
    assert policy.allows("mx1.example.net")
    assert not policy.allows("a.mx1.example.net") and not policy.allows("example.net")
    assert not policy.allows("mail.example.org")


def test_result_types():
    assert result_type("certificate not accepted: certificate has expired") == (
        "certificate-expired"
    )
    assert result_type("certificate not accepted: Hostname mismatch, certificate is not valid") == (
        "certificate-host-mismatch"
    )
    assert result_type("certificate not accepted: self-signed certificate") == (
        "certificate-not-trusted"
    )
    assert result_type("DANE: no TLSA record (3 1 1) matches") == "validation-failure"


def targets(record: bytes) -> list[str]:
    return [str(t) for t in parse_rua([record]).targets]


def test_rua_keeps_mailto_and_https():
    assert targets(b"v=TLSRPTv1; rua=mailto:a@b.example,https://r.example/x?y=1") == [
        "mailto:a@b.example",
        "https://r.example/x?y=1",
    ]
    assert targets(b"v=TLSRPTv1;rua=mailto:a@b.example , https://r.example:8443/") == [
        "mailto:a@b.example",
        "https://r.example:8443/",
    ]
    assert (
        parse_rua([b"v=TLSRPTv1; rua=mailto:a@b.x", b"v=TLSRPTv1; rua=mailto:c@d.x"]).targets == []
    )
    assert targets(b"v=TLSRPTv1; rua=mailto:a%2Bb@b.example") == ["mailto:a+b@b.example"]


@pytest.mark.parametrize(
    "uri,why",
    [
        ("mailto:a@example.net%0D%0ABcc:victim@evil.test", "plain address"),
        ("mailto:a@example.net\r\nBcc:victim@evil.test", "characters a URI may not hold"),
        ("mailto:a@example.net?bcc=victim@evil.test", "header fields"),
        ("mailto:-fevil@evil.test", "plain address"),
        ("mailto:-n", "plain address"),
        ("mailto:a@example.net%2Cvictim@evil.test", "plain address"),
        ("mailto:%22a%20b%22@example.net", "plain address"),
        ("mailto:a@localhost", "plain address"),
        ("mailto:jos%C3%A9@example.net", "not ASCII"),
        ("https://[::1/x", "not a valid URL"),
        ("https://r.example:99999/x", "not a valid URL"),
        ("https://r.example:0/x", "port out of range"),
        ("https://user:pw@r.example/x", "user information"),
        ("https://127.0.0.1/x", "without a host name"),
        ("https://r.example/x#frag", "fragment"),
        ("ftp://r.example/x", "neither mailto: nor https:"),
        ("https://r.example/" + "x" * 3000, "longer than 2048 bytes"),
    ],
)
def test_rua_uris_outside_the_grammar_are_skipped_with_a_reason(uri, why):
    record = f"v=TLSRPTv1; rua={uri},mailto:good@r.example".encode("latin-1")
    found = parse_rua([record])
    assert [str(t) for t in found.targets] == ["mailto:good@r.example"]
    [skip] = found.skipped
    assert why in skip
    assert "\r" not in skip and "\n" not in skip and len(skip) < 200


def test_no_more_than_five_rua_targets_and_no_duplicates():
    uris = ",".join(f"mailto:r{i}@r.example" for i in range(1000))
    found = parse_rua([f"v=TLSRPTv1; rua=mailto:r0@r.example,{uris}".encode()])
    assert [t.where for t in found.targets] == [f"r{i}@r.example" for i in range(5)]
    assert len(found.skipped) == 995 and "only the first 5" in found.skipped[0]


def test_a_header_value_that_would_break_out_of_its_field_is_refused():
    report = build("2026-11-30", "d.example", [], "org.example", "ops@org.example")
    message(report, "org.example", "ops@org.example", "a@r.example", "b", "date")
    for to in ("a@r.example\r\nBcc: v@evil.test", "a@r.example\nBcc: v@evil.test", "a\0"):
        with pytest.raises(HeaderError):
            message(report, "org.example", "ops@org.example", to, "b", "date")


def test_report_document_counts_sessions_per_policy():
    held = {"type": "tlsa", "domain": "d.example", "policy": ["3 1 1 ab"], "mx": []}
    lines = [
        {**held, "result": ""},
        {
            **held,
            "result": "validation-failure",
            "sending-ip": "192.0.2.1",
            "mx-host": "mx.d.example",
        },
        {
            **held,
            "result": "validation-failure",
            "sending-ip": "192.0.2.1",
            "mx-host": "mx.d.example",
        },
    ]
    report = build("2026-11-30", "d.example", lines, "org.example", "ops@org.example")
    [policy] = report.document["policies"]
    assert policy["policy"] == {
        "policy-type": "tlsa",
        "policy-string": ["3 1 1 ab"],
        "policy-domain": "d.example",
    }
    assert policy["summary"]["total-failure-session-count"] == 2
    assert policy["failure-details"][0]["failed-session-count"] == 2
    assert report.filename("org.example") == "org.example!d.example!1795996800!1796083199.json.gz"


def test_a_tls_report_of_ours_is_recognized():
    report = b"From: r@example.org\nTLS-Report-Domain: d.example\n\nbody\n"
    assert is_tls_report(report, b"r@example.org", "r@example.org")
    assert not is_tls_report(report, b"other@example.org", "r@example.org")
    assert not is_tls_report(
        b"Subject: x\n\nTLS-Report-Domain: d\n", b"r@example.org", "r@example.org"
    )
