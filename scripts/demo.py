"""The demo: one real delivery with everything on, on this machine's loopback only.

It builds a throw-away qmail home with qremote installed, makes an RSA and an Ed25519 key
for example.com and publishes them on a loopback DNS server, starts an SMTP server with
STARTTLS on a 127.0.0.x address listed as the MX of example.net, runs the installed
qmail-remote exactly as qmail-rspawn would, and verifies the message that arrived with
dkimpy and Perl's Mail::DKIM. Then it starts qremoted and sends the message twice more
through the thin client (the second over the kept connection). Exit status 0 means every
check passed.
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import certs, keys, qmailhome, verifiers  # noqa: E402
from tests.support.daemon import Qremoted  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402
from tests.support.smtpserver import ScriptedServer, free_port  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

FAILURES: list[str] = []


def check(ok: bool, what: str) -> bool:
    """Record a failed check by name, so the demo can say why it failed."""
    if not ok:
        FAILURES.append(what)
    return ok

MESSAGE = b"""From: Alice <alice@example.com>
To: Bob <bob@example.net>
Subject: qremote demo
Date: Sun, 22 Nov 2026 12:00:00 +0000
Message-ID: <demo@example.com>

Hello Bob,

this message was signed with DKIM (RSA and Ed25519) and DomainKeys,
and sent over STARTTLS by qremote's qmail-remote.
.a line that starts with a dot
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as top, DnsServer() as dns:
        home = qmailhome.make(os.path.join(top, "qmail"), dns.address)
        rsa_key = keys.write_key(home.control, "example.com", "demo2026", "rsa")
        ed_key = keys.write_key(home.control, "example.com", "demo2026e", "ed25519", "ed25519")
        keys.publish(dns.zone, "example.com", "demo2026", rsa_key)
        keys.publish(dns.zone, "example.com", "demo2026e", ed_key)
        tls = certs.server_context(*certs.self_signed("mx.example.net"), os.path.join(top, "tls"))
        port = 25 if os.geteuid() == 0 else free_port()
        with ScriptedServer(port=port, tls_context=tls) as mx:
            dns.zone.mx("example.net", (10, "mx.example.net"))
            dns.zone.a("mx.example.net", mx.ip)
            if port != 25:
                home.write("smtproutes", f"example.net:{mx.ip}:{port}\n")
            run = home.deliver("example.net", "alice@example.com", ["bob@example.net"], MESSAGE)
            # The same again with qremoted running: the thin client hands it over, and the
            # second message rides the connection the first one left open.
            with Qremoted(home) as daemon:
                via_daemon = [
                    home.deliver("example.net", "alice@example.com", ["bob@example.net"], MESSAGE)
                    for _ in range(2)
                ]
                # qremoted writes its log line after it has answered the client.
                try:
                    wait_until(lambda: daemon.log().count("delivery pid") >= 2, 10)
                except AssertionError:
                    pass
                log = daemon.log()
        print("qmail-remote said:")
        for report in run.reports:
            print("  " + report.decode("utf-8", "replace").replace("\n", "\n  ").rstrip())
        print(f"exit status {run.status}; qmail-rspawn hands qmail-send: {run.qmail[:1].decode()}")
        check(run.status == 0 and run.qmail.startswith(b"K"), "the first delivery was not K")
        used_tls = any(c.tls for c in mx.connections)
        print(f"STARTTLS used: {used_tls}")
        check(used_tls, "STARTTLS was not used")
        print("\nthrough qremoted:")
        for i, again in enumerate(via_daemon):
            first = again.reports[-1].decode("utf-8", "replace").splitlines()
            reused = [line for line in first if line.startswith("Reused")]
            print(f"  message {i + 2}: {first[0]} {' '.join(reused)}")
            check(again.status == 0 and again.qmail.startswith(b"K"), f"message {i + 2} not K")
        check(bool(reused), "the third message did not reuse the kept connection")
        logged = log.count("delivery pid")
        print(f"  qremoted logged {logged} deliveries")
        check(logged == 2, f"qremoted logged {logged} deliveries, not 2:\n{log}")
        if len(mx.received) != 3:
            print(f"\ndemo: FAILED: {len(mx.received)} of 3 messages arrived")
            return 1
        print("  dkimpy on what arrived through qremoted:", end="")
        for got in mx.received[1:]:
            both = verifiers.dkimpy(got.content, dns.ip, dns.port)
            print(" pass" if len(both) == 2 and all(both) else " FAIL", end="")
            check(len(both) == 2 and all(both), "dkimpy failed a message sent through qremoted")
        print()
        arrived = mx.received[0].content
        print("\nDKIM under dkimpy:")
        py = verifiers.dkimpy(arrived, dns.ip, dns.port)
        for i, good in enumerate(py):
            print(f"  signature {i + 1}: {'pass' if good else 'FAIL'}")
        check(len(py) == 2 and all(py), "dkimpy did not pass both DKIM signatures")
        print("DKIM and DomainKeys under Mail::DKIM (Perl):")
        for kind, domain, selector, detail in verifiers.mail_dkim(arrived, dns.ip, dns.port):
            if "unsupported algorithm ed25519" in detail:
                detail += (
                    f" (expected: Mail::DKIM {verifiers.mail_dkim_version()}, installed here,"
                    " does not implement Ed25519, RFC 8463; dkimpy verified that signature"
                    " above)"
                )
            else:
                check(detail == "pass", f"Mail::DKIM said {detail!r} for {kind} s={selector}")
            print(f"  {kind} d={domain} s={selector}: {detail}")
    if FAILURES:
        print("\ndemo: FAILED:")
        for failure in FAILURES:
            print(f"  {failure}")
        return 1
    print("\ndemo: everything passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
