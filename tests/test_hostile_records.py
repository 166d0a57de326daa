"""What a receiving domain controls, used as an attacker would: its ``_smtp._tls`` and
``_mta-sts`` records (on the loopback DNS server), its policy and report servers (real
HTTPS servers and silent sockets), and envelope addresses a local caller of qmail-queue
can write. The reports go through notqmail's own qmail-inject, built from
``../shared/vendor/``, queueing through ``$QMAILQUEUE`` into a recorder: what it records is
the envelope and header the real program made of our arguments."""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import pytest

from qremote.tlsrpt.record import Held, record
from tests.support import certs
from tests.support.httpsserver import HttpsServer, Page
from tests.support.smtpserver import ScriptedServer, fresh_ip

DOMAIN = "example.net"
CONTACT = "tlsrpt@example.org"
GOOD = "good@reports.example.com"

RECORDER = """#!{python}
# qmail-queue for the test: keeps the message (fd 0) and the envelope (fd 1).
import json, os, sys
message = sys.stdin.buffer.read()
envelope = os.fdopen(1, "rb").read().split(b"\\0")
entry = {{
    "sender": envelope[0][1:].decode("latin-1"),
    "recipients": [p[1:].decode("latin-1") for p in envelope[1:] if p[:1] == b"T"],
    "message": message.decode("latin-1"),
}}
with open({log!r}, "a") as f:
    f.write(json.dumps(entry) + "\\n")
"""


@pytest.fixture
def reporting(home, real_inject, tmp_path):
    """A qmail home whose bin/qmail-inject is notqmail's, queueing into a recorder; a
    day of sessions for example.net waits to be reported. Yields the recorder's log."""
    log = str(tmp_path / "queued.jsonl")
    recorder = str(tmp_path / "qmail-queue")
    with open(recorder, "w") as f:
        f.write(RECORDER.format(python=sys.executable, log=log))
    os.chmod(recorder, 0o755)
    inject = os.path.join(home.path, "bin", "qmail-inject")
    os.makedirs(os.path.dirname(inject), exist_ok=True)
    with open(inject, "w") as f:
        f.write(f'#!/bin/sh\nQMAILQUEUE={recorder} exec {real_inject} "$@"\n')
    os.chmod(inject, 0o755)
    home.write("tlsrptorg", "example.org\n")
    home.write("tlsrptcontact", CONTACT + "\n")
    yesterday = time.time() - 86400
    for domain in (DOMAIN, "example.com"):
        held = Held("sts", domain, ("version: STSv1", "mode: enforce"), (f"*.{domain}",))
        record(home.path, held, None, now=yesterday)
    return log


def queued(log: str) -> list[dict]:
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [json.loads(line) for line in f]


def rua(zone, domain: str, *uris: str) -> None:
    """A TLSRPT record in zone-file text: long values split into 255-byte strings."""
    text = "v=TLSRPTv1; rua=" + ",".join(uris)
    strings = [text[i : i + 200] for i in range(0, len(text), 200)]
    zone.add(f"_smtp._tls.{domain}", "TXT", " ".join(f'"{s}"' for s in strings))


def pending(home) -> list[str]:
    folder = os.path.join(home.path, "qremote", "tlsrpt")
    return sorted(n for n in os.listdir(folder) if n.endswith(".log"))


# -- 1, 2: header and option injection through mailto: ------------------------------------


def test_hostile_mailto_uris_add_no_recipient_header_field_or_option(home, zone, reporting):
    rua(
        zone,
        DOMAIN,
        "mailto:a@example.net%0D%0ABcc:victim@evil.test",
        "mailto:b@example.net\\013\\010Bcc:victim2@evil.test",  # raw CR LF in the TXT string
        "mailto:c@example.net?bcc=victim3@evil.test",
        "mailto:-fevil@evil.test",
        "mailto:-n",
        f"mailto:{GOOD}",
    )
    run = home.qremote("tlsrpt", "send")
    assert run.returncode == 0 and run.stderr == "", run
    [mail] = queued(reporting)
    assert mail["sender"] == CONTACT and mail["recipients"] == [GOOD]
    head = mail["message"].split("\n\n")[0]
    assert "evil" not in mail["message"] and "\nBcc" not in head
    assert f"\nTo: {GOOD}\n" in head
    skipped = [line for line in run.stdout.splitlines() if "skipped" in line]
    assert len(skipped) == 5 and all(f" {DOMAIN}: rua " in line for line in skipped)
    assert all("\r" not in line for line in run.stdout.splitlines())
    assert pending(home) == []  # reported; example.com has no record


def test_a_thousand_rua_uris_get_five_reports(home, zone, reporting):
    rua(zone, DOMAIN, *(f"mailto:r{i}@reports.example.com" for i in range(1000)))
    run = home.qremote("tlsrpt", "send")
    assert run.returncode == 0, run
    sent = queued(reporting)
    assert [m["recipients"] for m in sent] == [[f"r{i}@reports.example.com"] for i in range(5)]
    assert "only the first 5 are used" in run.stdout


# -- 4: one bad URI stops nothing -----------------------------------------------------------


def test_malformed_https_uris_are_skipped_and_every_other_report_goes(home, zone, reporting):
    rua(zone, DOMAIN, "https://[::1/x", "https://r.example.com:99999/x", f"mailto:{GOOD}")
    rua(zone, "example.com", "mailto:other@reports.example.com")
    run = home.qremote("tlsrpt", "send")
    assert run.returncode == 0 and "Traceback" not in run.stderr, run
    assert sorted(m["recipients"][0] for m in queued(reporting)) == [
        GOOD,
        "other@reports.example.com",
    ]
    assert run.stdout.count("not a valid URL") == 2
    assert pending(home) == []
    again = home.qremote("tlsrpt", "send")
    assert again.returncode == 0 and again.stdout == "" and len(queued(reporting)) == 2


# -- 3: the whole job has a time bound ------------------------------------------------------


def test_stalling_report_servers_cannot_hold_the_job_past_its_bound(home, zone, reporting):
    from qremote.tlsrpt import send

    ip = fresh_ip()
    with socket.socket() as silent:  # takes connections, never says a word (not even TLS)
        silent.bind((ip, 443))
        silent.listen(64)
        zone.a("stall.example.com", ip)
        rua(zone, DOMAIN, *(f"https://stall.example.com/{i}" for i in range(5)))
        started = time.monotonic()
        lines = send.run(home.path, budget=3.0)
        took = time.monotonic() - started
    assert took < 15, lines
    assert any("out of time; next run" in line or "stopped after" in line for line in lines)
    assert pending(home)  # the day waits for the next run


# -- 5: a failed policy fetch is remembered without an earlier policy -----------------------


@pytest.fixture(scope="module")
def ca():
    return certs.Authority.create("hostile records CA")


def test_a_failed_policy_fetch_is_not_repeated_for_every_delivery(home, zone, tmp_path, ca):
    path = tmp_path / "system-ca.pem"
    path.write_bytes(ca.pem())
    trusted = {"SSL_CERT_FILE": str(path)}
    context = certs.server_context(*ca.issue(f"mta-sts.{DOMAIN}"), str(tmp_path / "web"))
    with HttpsServer(context) as web, ScriptedServer() as mx:
        zone.a(f"mta-sts.{DOMAIN}", web.ip)
        zone.add(f"_mta-sts.{DOMAIN}", "TXT", '"v=STSv1; id=20261204"')
        web.page(f"mta-sts.{DOMAIN}", "/.well-known/mta-sts.txt", Page(500, body=b"down"))
        zone.mx(DOMAIN, (10, "mx1.example.net"))
        zone.a("mx1.example.net", mx.ip)
        runs = [
            home.deliver(
                DOMAIN, "a@example.org", [f"b@{DOMAIN}"], b"Subject: s\n\nb\n", env=trusted
            )
            for _ in range(3)
        ]
    assert all(r.qmail.startswith(b"K") for r in runs), [r.qmail for r in runs]
    assert len([r for r in web.requests if r.method == "GET"]) == 1
    assert os.path.exists(os.path.join(home.path, "qremote", "mta-sts", ".failed", DOMAIN))
    folder = os.path.join(home.path, "qremote", "tlsrpt")
    with open(os.path.join(folder, os.listdir(folder)[0])) as f:
        results = [json.loads(line)["result"] for line in f]
    assert len(results) == 3 and all(r.startswith("sts-policy-fetch-error") for r in results)


def test_the_failure_window_is_shared_on_disk_and_ends(tmp_path):
    from qremote.limits import STS_RETRY_AFTER
    from qremote.mtasts.store import PolicyStore

    one, other = PolicyStore(str(tmp_path)), PolicyStore(str(tmp_path))
    one.fetch_failed(DOMAIN, 1000.0, "sts-policy-fetch-error: HTTP 500")
    assert other.failure(DOMAIN, 1000.0 + STS_RETRY_AFTER - 1) == "sts-policy-fetch-error: HTTP 500"
    assert other.failure(DOMAIN, 1000.0 + STS_RETRY_AFTER) is None
    one.fetched(DOMAIN)
    assert PolicyStore(str(tmp_path)).failure(DOMAIN, 1001.0) is None


# -- 7: envelope addresses a local caller of qmail-queue can write --------------------------

MSG = b"From: a@example.org\nSubject: x\n\nbody\n"


def served(zone, server) -> None:
    zone.mx(DOMAIN, (10, "mx1.example.net"))
    zone.a("mx1.example.net", server.ip)


def test_a_recipient_holding_cr_lf_is_refused_and_no_server_is_asked(home, zone):
    with ScriptedServer() as mx:
        served(zone, mx)
        run = home.deliver(
            DOMAIN, "a@example.org", [f"evil@evil.test>\r\nRCPT TO:<b@{DOMAIN}"], MSG
        )
    assert run.status == 0
    assert run.qmail.startswith(b"DThe recipient's address holds CR, LF or NUL"), run.qmail
    assert b"(#5.1.3)" in run.qmail and b"evil" not in run.output
    assert not mx.connections


def test_of_two_recipients_the_one_holding_lf_is_refused_the_other_delivered(home, zone):
    with ScriptedServer() as mx:
        served(zone, mx)
        run = home.deliver(DOMAIN, "a@example.org", ["x@evil.test\nRSET", f"b@{DOMAIN}"], MSG)
    assert run.reports[0].startswith(b"hThe recipient's address holds CR, LF or NUL")
    assert run.reports[1] == b"r" and run.reports[-1].startswith(b"K"), run.reports
    assert mx.received[0].rcpt_tos == [f"b@{DOMAIN}"]
    assert not any("RSET" in c or "evil" in c for conn in mx.connections for c in conn.commands)


def test_a_sender_holding_lf_is_permanent_and_no_server_is_asked(home, zone):
    with ScriptedServer() as mx:
        served(zone, mx)
        run = home.deliver(DOMAIN, "a@example.org\nRCPT TO:<x@evil.test>", [f"b@{DOMAIN}"], MSG)
    assert run.qmail.startswith(b"DThe sender's address holds CR, LF or NUL"), run.qmail
    assert b"(#5.1.7)" in run.qmail and not mx.connections


def test_a_local_part_that_is_not_utf8_never_goes_even_under_smtputf8(home, zone):
    latin1 = "jos\udce9@" + DOMAIN  # the byte 0xE9 alone: Latin-1, not UTF-8
    with ScriptedServer(smtputf8=True) as mx:
        served(zone, mx)
        run = home.deliver(DOMAIN, "a@example.org", [latin1, f"b@{DOMAIN}"], MSG)
    assert run.reports[0].startswith(b"hThe recipient's address is not ASCII and not valid UTF-8")
    assert b"(#5.6.7)" in run.reports[0]
    assert run.reports[-1].startswith(b"K")
    assert mx.received[0].rcpt_tos == [f"b@{DOMAIN}"]
    assert b"jos\xe9" not in bytes(mx.received_bytes)


# -- 33.15: what was reported is kept for 30 days, then deleted --------------------------


def test_reported_days_are_kept_thirty_days_then_deleted(home, zone):
    from qremote.tlsrpt import send
    from qremote.tlsrpt.record import day_of, folder

    os.makedirs(folder(home.path))
    now = time.time()
    old, recent = day_of(now - 31 * 86400), day_of(now - 29 * 86400)
    for day in (old, recent):
        for kind in ("reported", "done"):
            with open(os.path.join(folder(home.path), f"{day}.{kind}"), "w") as f:
                f.write("{}\n")
    lines = send.run(home.path, now)
    assert sorted(os.listdir(folder(home.path))) == [f"{recent}.done", f"{recent}.reported"]
    assert any("deleted 2 files" in line for line in lines)
