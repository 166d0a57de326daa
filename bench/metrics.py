"""bench/metrics: what counting costs qremoted per delivery, against what it already does.

Per delivery qremoted fills the delivery's trace (a dozen attribute writes, as the steps
do) and adds it to its counts; with ``--log-format json`` it also writes the JSON record
instead of the text line. Peers measured in the same run, taking turns (bench/sign.py's
``medians``) so a neighbour's load falls on all alike:
- the text log line qremoted writes for every delivery already;
- one RSA-2048 signature with ``cryptography`` (qremoted makes two per delivery).
And, once per scrape rather than per delivery, the Prometheus text for 50 MX groups.
The target (issue): at most 0.05 ms per delivery.

    python bench/metrics.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

from bench.sign import medians  # noqa: E402
from qremote.daemon.formatting import delivery_line  # noqa: E402
from qremote.delivery.outcome import Outcome  # noqa: E402
from qremote.metrics import record  # noqa: E402
from qremote.metrics.counts import SERIES, Counts  # noqa: E402
from qremote.metrics.exposition import render  # noqa: E402
from qremote.metrics.trace import Trace  # noqa: E402

REPORT = (
    b"K192.0.2.7 accepted message.\nRemote host said: 250 2.0.0 Ok: queued as 4711\n"
    b"TLS TLSv1.3 TLS_AES_256_GCM_SHA384, not verified\n"
    b"Signed: DKIM d=example.org s=q20261201 rsa-sha256; DomainKeys d=example.org s=q20261201"
    b" rsa-sha1.\n"
)


def one_delivery(counts: Counts) -> Trace:
    """What the steps of a delivery write, then what qremoted does with it."""
    trace = Trace()
    trace.signatures, trace.unsigned, trace.sign_seconds = ("rsa-sha256", "domainkeys"), "", 0.0006
    trace.group = "google"
    trace.slot, trace.slot_seconds = "free", 0.0
    trace.opened += 1
    trace.mx_host, trace.mx_ip, trace.reused = "mx1.example.net", "192.0.2.7", False
    trace.tls, trace.tls_version = "opportunistic", "TLSv1.3"
    trace.closing("done")
    counts.delivered(trace, "K", "r", 0.41)
    return trace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    counts = Counts()
    trace = one_delivery(counts)
    out = Outcome([b"r"], REPORT)
    key = rsa.generate_private_key(65537, 2048)
    data = b"x" * 300
    busy = Counts()
    for n in range(50):  # a site with fifty named groups, every series in use
        t = Trace(group=f"group{n}", tls="dane", opened=1, closed=["done", "idle"],
                  signatures=("rsa-sha256", "domainkeys"), tls_failures=["validation-failure"],
                  slot="waited", tcpto_skips=1)  # fmt: skip
        for letter in "KZD":
            busy.delivered(t, letter, "rsh", 3.0)
    calls = {
        "trace + counts": lambda: one_delivery(counts),
        "JSON record": lambda: record.delivery(
            trace, 4711, "example.net", "a@example.org", "r", REPORT.decode(), 0.41, True
        ),
        "text line (peer)": lambda: delivery_line(4711, "example.net", "a@example.org", out,
                                                  0.41, True),  # fmt: skip
        "RSA-2048 signature (peer)": lambda: key.sign(data, padding.PKCS1v15(), hashes.SHA256()),
        "scrape, 50 groups": lambda: render(busy, SERIES),
    }
    got = medians(calls, args.seconds)
    us = 1e6
    counted, json_line = got["trace + counts"], got["JSON record"]
    text, rsa_sig = got["text line (peer)"], got["RSA-2048 signature (peer)"]
    print(f"per delivery, always:      trace + counts {counted * us:6.1f} us")
    print(f"per delivery, json log:    JSON record    {json_line * us:6.1f} us"
          f" (instead of the text line, {text * us:.1f} us)")  # fmt: skip
    print(f"peer: one RSA-2048 signature {rsa_sig * us:.1f} us (two per delivery)")
    print(f"per scrape: Prometheus text for 50 groups {got['scrape, 50 groups'] * 1000:.2f} ms"
          f" ({len(render(busy, SERIES)) // 1024} KB)")  # fmt: skip
    worst = counted + max(json_line - text, 0)
    print(
        f"ratios: counting / one RSA signature {counted / rsa_sig:.3f}x, counting / text line"
        f" {counted / text:.2f}x; cost per delivery {worst * 1000:.4f} ms (target <= 0.05 ms)"
    )


if __name__ == "__main__":
    main()
