"""MTA-STS (RFC 8461) against real peers: policies served by a real HTTPS server on
loopback with a CA made here (the system's CA store for the delivery, through OpenSSL's
SSL_CERT_FILE), the loopback DNS server for the TXT records, aiosmtpd MX hosts with
certificates valid and invalid for their names."""

from __future__ import annotations

import json
import os

import pytest

from tests.support import certs
from tests.support.daemon import Qremoted
from tests.support.httpsserver import HttpsServer, Page
from tests.support.smtpserver import ScriptedServer

MSG = b"From: a@example.org\nSubject: sts\n\nbody\n"
DOMAIN = "example.net"
POLICY_PATH = "/.well-known/mta-sts.txt"


@pytest.fixture(scope="module")
def ca():
    return certs.Authority.create("MTA-STS test CA")


@pytest.fixture
def trusted(tmp_path, ca):
    path = tmp_path / "system-ca.pem"
    path.write_bytes(ca.pem())
    return {"SSL_CERT_FILE": str(path)}


@pytest.fixture
def web(tmp_path, ca, zone):
    """mta-sts.example.net on a real HTTPS server."""
    context = certs.server_context(*ca.issue(f"mta-sts.{DOMAIN}"), str(tmp_path / "web"))
    with HttpsServer(context) as server:
        zone.a(f"mta-sts.{DOMAIN}", server.ip)
        yield server


def policy(mode: str = "enforce", mx: tuple[str, ...] = ("*.example.net",), age: int = 86400):
    lines = ["version: STSv1", f"mode: {mode}", *[f"mx: {m}" for m in mx], f"max_age: {age}"]
    return ("\r\n".join(lines) + "\r\n").encode()


def publish(zone, web, body: bytes | None = None, policy_id: str = "20261130", **page):
    with zone.lock:  # a new id replaces the old record
        zone.records[(f"_mta-sts.{DOMAIN}", "TXT")] = [f'"v=STSv1; id={policy_id}"']
    web.page(f"mta-sts.{DOMAIN}", POLICY_PATH, Page(body=body or policy(), **page))


def mx_server(tmp_path, ca, zone, name="mx1.example.net", cert_name=None, pref=10):
    tls = certs.server_context(*ca.issue(cert_name or name), str(tmp_path / name))
    server = ScriptedServer(tls_context=tls)
    zone.a(name, server.ip)
    return server


def deliver(home, env):
    run = home.deliver(DOMAIN, "a@example.org", [f"b@{DOMAIN}"], MSG, env=env)
    assert run.status == 0
    return run


def report_lines(home) -> list[dict]:
    folder = os.path.join(home.path, "qremote", "tlsrpt")
    lines = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        with open(os.path.join(folder, name)) as f:
            lines.extend(json.loads(line) for line in f)
    return lines


def nothing_sent(server) -> bool:
    return not server.received and not any(
        c.startswith("MAIL") for conn in server.connections for c in conn.commands
    )


def test_enforce_with_a_valid_certificate(home, zone, web, tmp_path, ca, trusted):
    publish(zone, web)
    with mx_server(tmp_path, ca, zone) as mx:
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        run = deliver(home, trusted)
    assert run.qmail.startswith(b"K"), run.qmail
    assert b"MTA-STS enforce (policy id 20261130)\n" in run.reports[-1]
    assert b", verified\n" in run.reports[-1]
    assert len(mx.received) == 1
    [line] = report_lines(home)
    assert (line["type"], line["domain"], line["result"]) == ("sts", DOMAIN, "")
    status = home.qremote("status").stdout
    assert "  example.net: enforce, id 20261130, expires in 1.0 days" in status
    assert "  example.net (sts): 1 successful, 0 failed" in status
    assert line["mx"] == ["*.example.net"] and line["policy"][0] == "version: STSv1"


def test_enforce_with_a_certificate_for_another_name(home, zone, web, tmp_path, ca, trusted):
    publish(zone, web)
    with mx_server(tmp_path, ca, zone, cert_name="other.example") as mx:
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        run = deliver(home, trusted)
    assert run.qmail.startswith(b"Z") and b"certificate not accepted" in run.qmail
    assert nothing_sent(mx) and len(mx.connections) == 1
    [line] = report_lines(home)
    assert line["result"] == "certificate-host-mismatch" and line["mx-host"] == "mx1.example.net"


def test_an_mx_the_policy_does_not_name_is_not_used(home, zone, web, tmp_path, ca, trusted):
    publish(zone, web, policy(mx=("mx2.example.net",)))
    with (
        mx_server(tmp_path, ca, zone, "mx1.example.net") as one,
        mx_server(tmp_path, ca, zone, "mx2.example.net") as two,
    ):
        zone.mx(DOMAIN, (10, "mx1.example.net"), (20, "mx2.example.net"))
        run = deliver(home, trusted)
    assert run.qmail.startswith(b"K") and not one.connections and len(two.received) == 1


def test_no_mx_the_policy_names_means_no_connection(home, zone, web, tmp_path, ca, trusted):
    publish(zone, web, policy(mx=("mail.example.com",)))
    with mx_server(tmp_path, ca, zone) as mx:
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        run = deliver(home, trusted)
    assert run.qmail.startswith(b"ZNo MX host of example.net (mx1.example.net) matches its")
    assert not mx.connections


def test_testing_mode_delivers_and_records_the_failure(home, zone, web, tmp_path, ca, trusted):
    publish(zone, web, policy("testing"))
    with mx_server(tmp_path, ca, zone, cert_name="other.example") as mx:
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        run = deliver(home, trusted)
    assert run.qmail.startswith(b"K"), run.qmail
    assert b"MTA-STS testing: TLS would have failed (certificate not accepted" in run.qmail
    assert b", not verified\n" in run.qmail and mx.connections[-1].tls
    [line] = report_lines(home)
    assert line["result"] == "certificate-host-mismatch"


def test_a_failed_fetch_keeps_the_cached_enforce_policy(home, zone, web, tmp_path, ca, trusted):
    publish(zone, web)
    with mx_server(tmp_path, ca, zone) as good:
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        assert deliver(home, trusted).qmail.startswith(b"K")
    # The TXT id changes and the policy server breaks: the cached policy still holds.
    publish(zone, web, b"gone", "20261201", status=500)
    with mx_server(tmp_path, ca, zone, cert_name="other.example") as bad:
        run = deliver(home, trusted)
        # Within STS_RETRY_AFTER the failed fetch is not tried again.
        again = deliver(home, trusted)
    assert run.qmail.startswith(b"Z") and nothing_sent(bad), run.qmail
    assert again.qmail.startswith(b"Z")
    assert len(good.received) == 1
    fetches = [r for r in web.requests if r.path == POLICY_PATH]
    assert len(fetches) == 2


def test_a_changed_id_is_fetched_again(home, zone, web, tmp_path, ca, trusted):
    publish(zone, web)
    with mx_server(tmp_path, ca, zone, cert_name="other.example") as mx:
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        assert deliver(home, trusted).qmail.startswith(b"Z")
        publish(zone, web, policy("testing"), "20261202")
        run = deliver(home, trusted)
        again = deliver(home, trusted)
    assert run.qmail.startswith(b"K") and b"MTA-STS testing (policy id 20261202)" in run.qmail
    assert again.qmail.startswith(b"K") and len(mx.received) == 2
    assert len([r for r in web.requests if r.path == POLICY_PATH]) == 2  # cached the 3rd time


@pytest.mark.parametrize(
    "body,page,result",
    [
        (b"version: STSv1\nmode: enforce\nmax_age: 86400\n" + b"x" * 70000, {}, "fetch-error"),
        (b"version: STSv2\nmode: enforce\nmx: *.example.net\nmax_age: 1\n", {}, "invalid"),
        (policy(), {"status": 301, "headers": {"Location": "https://elsewhere/"}}, "fetch"),
        (policy(), {"media": "text/html"}, "fetch-error"),
        (policy(), {"headers": {"X-Big": "a" * 30000}}, "fetch-error"),
    ],
    ids=["oversized", "malformed", "redirect", "not-text-plain", "header-over-16k"],
)
def test_an_unusable_policy_is_ignored_and_reported(
    home, zone, web, tmp_path, ca, trusted, body, page, result
):
    publish(zone, web, body, **page)
    with mx_server(tmp_path, ca, zone, cert_name="other.example") as mx:
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        run = deliver(home, trusted)
    assert run.qmail.startswith(b"K") and b"MTA-STS" not in run.qmail
    assert len(mx.received) == 1
    [line] = report_lines(home)
    assert line["result"].startswith("sts-policy-") and result in line["result"]


def test_an_untrusted_policy_server_is_sts_webpki_invalid(home, zone, tmp_path, ca, trusted):
    stranger = certs.Authority.create("stranger")
    context = certs.server_context(*stranger.issue(f"mta-sts.{DOMAIN}"), str(tmp_path / "w"))
    with HttpsServer(context) as web, mx_server(tmp_path, ca, zone):
        zone.a(f"mta-sts.{DOMAIN}", web.ip)
        publish(zone, web)
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        run = deliver(home, trusted)
    assert run.qmail.startswith(b"K")
    assert report_lines(home)[0]["result"] == "sts-webpki-invalid"


def test_qremoted_and_standalone_share_the_disk_cache(
    home, zone, web, tmp_path, ca, trusted, monkeypatch
):
    publish(zone, web)
    with mx_server(tmp_path, ca, zone) as mx:
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        assert deliver(home, trusted).qmail.startswith(b"K")  # standalone: fetched, cached
    web.page(f"mta-sts.{DOMAIN}", POLICY_PATH, Page(500, body=b"down"))
    for name, value in trusted.items():
        monkeypatch.setenv(name, value)
    with mx_server(tmp_path, ca, zone, cert_name="other.example") as bad, Qremoted(home):
        run = deliver(home, {})
    assert run.qmail.startswith(b"Z") and b"MTA-STS enforce (policy id 20261130)" in run.qmail
    assert nothing_sent(bad) and len(mx.received) == 1
    assert len([r for r in web.requests if r.path == POLICY_PATH]) == 1


def test_mtasts_off(home, zone, web, tmp_path, ca, trusted):
    home.write("mtasts", "off\n")
    publish(zone, web)
    with mx_server(tmp_path, ca, zone, cert_name="other.example") as mx:
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        run = deliver(home, trusted)
    assert run.qmail.startswith(b"K") and not web.requests and len(mx.received) == 1


# -- TLS reports (RFC 8460) ------------------------------------------------------------------

INJECT = """#!{python}
# qmail-inject for the test: hands the message to bin/qmail-remote as qmail would.
import os, subprocess, sys
args = sys.argv[1:]
sender = args[args.index("-f") + 1]
rcpt = args[-1]
message = sys.stdin.buffer.read()
home = {home!r}
out = subprocess.run(
    [os.path.join(home, "bin", "qmail-remote"), rcpt.rpartition("@")[2], sender, rcpt],
    input=message, capture_output=True, cwd=home, env={env!r},
).stdout
with open(os.path.join(home, "inject.log"), "ab") as f:
    f.write(out + b"\\n")
sys.exit(0 if out.split(b"\\0")[-2][:1] == b"K" else 111)
"""


def test_a_days_tls_report_is_mailed_signed_and_posted(
    home, zone, web, tmp_path, ca, trusted, dns_server, monkeypatch
):
    import email
    import gzip
    import sys
    import time

    from tests.support import keys, verifiers

    # A day of sessions: one verified, one refused for its certificate's name.
    publish(zone, web)
    with mx_server(tmp_path, ca, zone) as good:
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        assert deliver(home, trusted).qmail.startswith(b"K")
    with mx_server(tmp_path, ca, zone, cert_name="other.example"):
        assert deliver(home, trusted).qmail.startswith(b"Z")
    assert len(good.received) == 1
    # Where the reports go: a mailbox behind an MX, and an HTTPS endpoint.
    zone.add(
        f"_smtp._tls.{DOMAIN}",
        "TXT",
        '"v=TLSRPTv1; rua=mailto:tlsrpt@reports.example.com,https://reports.example.com/v1"',
    )
    site = certs.server_context(*ca.issue("reports.example.com"), str(tmp_path / "reports"))
    home.write("tlsrptorg", "example.org\n")
    home.write("tlsrptcontact", "tlsrpt@example.org\n")
    key = keys.write_key(home.control, "example.org", "r1")
    keys.publish(zone, "example.org", "r1", key)
    inject = os.path.join(home.path, "bin", "qmail-inject")
    with open(inject, "w") as f:
        f.write(INJECT.format(python=sys.executable, home=home.path, env=trusted))
    os.chmod(inject, 0o755)
    tomorrow = str(int(time.time()) + 86400)
    for name, value in trusted.items():
        monkeypatch.setenv(name, value)  # the job's system CAs, for the HTTPS upload
    with HttpsServer(site) as reports, ScriptedServer() as mailbox:
        zone.a("reports.example.com", reports.ip)
        zone.mx("reports.example.com", (10, "mx.reports.example.com"))
        zone.a("mx.reports.example.com", mailbox.ip)
        reports.page("reports.example.com", "/v1", Page(201, body=b"thanks"))
        first = home.qremote("tlsrpt", "send", "--now", tomorrow)
        again = home.qremote("tlsrpt", "send", "--now", tomorrow)
    assert first.returncode == 0, first
    assert first.stdout.count("sent to") == 2 and again.stdout == ""
    # The POST: the gzipped JSON, RFC 8460's media type.
    [post] = [r for r in reports.requests if r.method == "POST"]
    assert post.headers["Content-Type"] == "application/tlsrpt+gzip"
    document = json.loads(gzip.decompress(post.body))
    assert document["organization-name"] == "example.org"
    assert document["contact-info"] == "tlsrpt@example.org"
    assert document["date-range"]["start-datetime"].endswith("T00:00:00Z")
    assert document["date-range"]["end-datetime"].endswith("T23:59:59Z")
    [held] = document["policies"]
    assert held["policy"] == {
        "policy-type": "sts",
        "policy-string": ["version: STSv1", "mode: enforce", "mx: *.example.net", "max_age: 86400"],
        "policy-domain": DOMAIN,
        "mx-host": ["*.example.net"],
    }
    assert held["summary"] == {
        "total-successful-session-count": 1,
        "total-failure-session-count": 1,
    }
    [detail] = held["failure-details"]
    assert detail["result-type"] == "certificate-host-mismatch"
    assert (
        detail["receiving-mx-hostname"] == "mx1.example.net" and detail["failed-session-count"] == 1
    )
    assert detail["sending-mta-ip"]
    # The mail: through qmail-inject and qmail-remote, multipart/report, DKIM-signed.
    [mail] = mailbox.received
    assert mail.rcpt_tos == ["tlsrpt@reports.example.com"]
    assert verifiers.dkimpy(mail.content, dns_server.ip, dns_server.port) == [True]
    parsed = email.message_from_bytes(mail.content)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "tlsrpt"
    assert parsed["TLS-Report-Domain"] == DOMAIN and parsed["TLS-Report-Submitter"] == "example.org"
    assert b" l=" not in mail.content.split(b"\r\n\r\n")[0].replace(b"\r\n\t", b" ")
    [attachment] = [p for p in parsed.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert attachment.get_filename().startswith(f"example.org!{DOMAIN}!")
    assert json.loads(gzip.decompress(attachment.get_payload(decode=True))) == document


def test_a_policy_server_that_never_answers_is_cut_off_by_the_time_out(tmp_path):
    """A real socket that takes the connection and says nothing (not even TLS)."""
    import asyncio
    import socket
    import time

    from qremote.https import HttpsError, request
    from tests.support.smtpserver import fresh_ip

    ip = fresh_ip()
    with socket.socket() as silent:
        silent.bind((ip, 443))
        silent.listen()

        async def resolve(host: str) -> str:
            return ip

        started = time.monotonic()
        with pytest.raises(HttpsError, match="no answer within 1 seconds"):
            asyncio.run(request("GET", f"https://mta-sts.{DOMAIN}/x", resolve, timeout=1.0))
    assert time.monotonic() - started < 5


def test_a_testing_fallback_connection_is_kept_as_what_it_is(
    home, zone, web, tmp_path, ca, trusted, monkeypatch
):
    """MTA-STS testing: the verified attempt fails, the mail goes over unverified TLS, and
    qremoted keeps that connection. It is kept as unverified: the next delivery does not
    take it for a verified one, it tries verification again (and records the failure)."""
    publish(zone, web, policy("testing"))
    for name, value in trusted.items():
        monkeypatch.setenv(name, value)
    from tests.support.smtpserver import fresh_ip
    from tests.test_metrics import _sample, _scrape

    where = f"{fresh_ip()}:9716"
    with (
        mx_server(tmp_path, ca, zone, cert_name="other.example") as mx,
        Qremoted(home, "--metrics", where),
    ):
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        first = deliver(home, {})
        second = deliver(home, {})
        numbers = _scrape(where)
    kind = 'group="other",kind="mta-sts-testing"'
    assert _sample(numbers, "qremote_tls_sessions_total", kind) == 2
    mismatch = 'group="other",result_type="certificate-host-mismatch"'
    assert _sample(numbers, "qremote_tls_failures_total", mismatch) == 2
    assert first.qmail.startswith(b"K") and second.qmail.startswith(b"K")
    assert len(mx.received) == 2
    failures = [line for line in report_lines(home) if line["result"]]
    assert [f["result"] for f in failures] == ["certificate-host-mismatch"] * 2
