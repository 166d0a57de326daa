"""MTA-STS and TLS reporting without sockets: the TXT record and the policy file as RFC
8461 writes them, mx patterns, the result types, the report document, and which mail
is one of our TLS reports."""

from __future__ import annotations

import pytest

from qremote.mtasts.policy import StsError, parse_policy, parse_txt
from qremote.tlsrpt.record import result_type
from qremote.tlsrpt.report import build, is_tls_report, parse_rua

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


def test_rua():
    assert parse_rua([b"v=TLSRPTv1; rua=mailto:a@b.example,https://r.example/x,ftp://no"]) == [
        "mailto:a@b.example",
        "https://r.example/x",
    ]
    assert parse_rua([b"v=TLSRPTv1; rua=mailto:a@b", b"v=TLSRPTv1; rua=mailto:c@d"]) == []


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
