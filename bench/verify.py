"""bench/verify: messages verified per second by qremote-dkimverify's verification, against
dkimpy's ``dkim.verify`` alone, both fetching keys from the same loopback DNS server.

The message (10 KB) carries what qremote signs: DKIM rsa-sha256 and DomainKeys. Ours
checks both and builds the Authentication-Results field; dkimpy checks the DKIM one.

The two take turns of 10 ms for the whole run (as in bench/sign); rates are 1 / the
median time per call.

    python bench/verify.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dkim  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402

from bench.sign import make_message, medians  # noqa: E402
from qremote.signing.keys import KeyStore  # noqa: E402
from qremote.signing.sign import sign_message  # noqa: E402
from qremote.verify import dkcheck, dkimcheck, results  # noqa: E402
from qremote.verify.txt import TxtLookup  # noqa: E402
from tests.support import keys  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as top, DnsServer() as server:
        key = keys.write_key(os.path.join(top, "control"), "example.com", "bench")
        keys.publish(server.zone, "example.com", "bench", key)
        store = KeyStore(os.path.join(top, "control", "domainkeys"))
        message = make_message()
        signed = sign_message(message, b"alice@example.com", store).headers + message
        wire = signed.replace(b"\n", b"\r\n")

        def ours():
            lookup = TxtLookup([(server.ip, server.port)], 10.0)
            found = dkimcheck.verify(signed, lookup) + dkcheck.verify(signed, lookup)
            assert [r.result for r in found] == ["pass", "pass"], found
            results.header("mx.example.org", found)

        def dnsfunc(name, timeout=5):
            query = dns.message.make_query(name.decode(), "TXT")
            answer = dns.query.udp(query, server.ip, port=server.port, timeout=timeout)
            if answer.flags & dns.flags.TC:
                answer = dns.query.tcp(query, server.ip, port=server.port, timeout=timeout)
            return b"".join(answer.answer[0][0].strings)

        def dkimpy():
            assert dkim.verify(wire, dnsfunc=dnsfunc)

        ours()
        dkimpy()
        t = medians({"ours": ours, "dkimpy": dkimpy}, args.seconds)
    o, d = 1 / t["ours"], 1 / t["dkimpy"]
    print(f"message: {len(signed)} bytes; {args.seconds:.0f} s in 10 ms turns, median per call")
    print(f"qremote-dkimverify (DKIM + DomainKeys + A-R)  {o:8.1f} msg/s")
    print(f"dkimpy dkim.verify (DKIM only)                {d:8.1f} msg/s")
    print(f"ratio                                         {o / d:8.2f} x")


if __name__ == "__main__":
    main()
