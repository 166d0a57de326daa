"""The demo: one real delivery with everything on, on this machine's loopback only.

It builds a throw-away qmail home with qremote installed, makes an RSA and an Ed25519 key
for example.com and publishes them on a loopback DNS server, starts an SMTP server with
STARTTLS on a 127.0.0.x address listed as the MX of example.net, runs the installed
qmail-remote exactly as qmail-rspawn would, and verifies the message that arrived with
dkimpy and Perl's Mail::DKIM. Exit status 0 means every check passed.
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import certs, keys, qmailhome, verifiers  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402
from tests.support.smtpserver import ScriptedServer, free_port  # noqa: E402

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
    ok = True
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
        print("qmail-remote said:")
        for report in run.reports:
            print("  " + report.decode("utf-8", "replace").replace("\n", "\n  ").rstrip())
        print(f"exit status {run.status}; qmail-rspawn hands qmail-send: {run.qmail[:1].decode()}")
        ok &= run.status == 0 and run.qmail.startswith(b"K")
        used_tls = any(c.tls for c in mx.connections)
        print(f"STARTTLS used: {used_tls}")
        ok &= used_tls
        if not mx.received:
            print("FAILED: nothing arrived")
            return 1
        arrived = mx.received[0].content
        print("\nDKIM under dkimpy:")
        py = verifiers.dkimpy(arrived, dns.ip, dns.port)
        for i, good in enumerate(py):
            print(f"  signature {i + 1}: {'pass' if good else 'FAIL'}")
        ok &= len(py) == 2 and all(py)
        print("DKIM and DomainKeys under Mail::DKIM (Perl):")
        for kind, domain, selector, detail in verifiers.mail_dkim(arrived, dns.ip, dns.port):
            print(f"  {kind} d={domain} s={selector}: {detail}")
            if "ed25519" not in detail:
                ok &= detail == "pass"
    print("\ndemo:", "everything passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
