"""bench/sign: messages signed per second, against dkimpy and against raw RSA.

A 10 KB message is signed the way qmail-remote signs it (DKIM rsa-sha256 relaxed/relaxed
plus DomainKeys rsa-sha1 nofws, 2048-bit key). Peers measured in the same run:
- ``dkim.sign`` from dkimpy (DKIM only, pure-Python RSA);
- the raw ``cryptography`` RSA-2048 signing rate (the 10 KB message hashed and signed),
  halved because a message carries two RSA signatures: the limit no signer can beat.

A forwarded message (our Authentication-Results field on top, its domain in arcsign) is
signed and ARC-sealed too: what the set adds over the same message signed alone is set
against its own two RSA signatures (ARC-Message-Signature and ARC-Seal), the part no
sealer can avoid.

Two bodies of the same size: one whitespace-heavy (every line has a double space and a
tab and space before its end, the worst case for relaxed and nofws canonicalization) and
one of plain prose lines, as most text mail is.

The contenders take turns of 10 ms each, round after round for the whole run, so a
neighbour's load on this shared machine falls on all of them alike; rates are 1 / the
median time per call over all turns.

    python bench/sign.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402

from qremote.signing.keys import KeyStore  # noqa: E402
from qremote.signing.sign import SignConfig, sign_message  # noqa: E402
from tests.support import keys  # noqa: E402

HEAD = (
    b"From: Alice <alice@example.com>\nTo: Bob <bob@example.net>\nSubject: benchmark\n"
    b"Date: Sun, 22 Nov 2026 12:00:00 +0000\nMessage-ID: <bench@example.com>\n"
    b"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
)
HEAVY_LINE = b"The quick brown fox jumps over the lazy dog, again and  again.\t \n"
PROSE_LINE = b"The quick brown fox jumps over the lazy dog, again and again and on.\n"


FORWARDED = (
    b"Authentication-Results: mx.example.org;\n\tdkim=pass header.d=example.com"
    b" header.i=@example.com header.s=s1 header.a=rsa-sha256\n"
)
"""What our filter put on a message it received: a forward of it is ARC-sealed."""


def make_message(line: bytes = HEAVY_LINE) -> bytes:
    return HEAD + line * ((10 * 1024 - len(HEAD)) // len(line) + 1)


def medians(calls: dict[str, Callable[[], object]], seconds: float, turn: float = 0.01) -> dict:
    """Median seconds per call of each function. The functions take turns of ``turn``
    seconds each, round after round, so a neighbour's load on this shared machine falls
    on all of them alike; within a turn the calls run back to back, as a signer's loop
    would (one call alone would measure cold caches, not the signer)."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    clock = time.perf_counter
    end = clock() + seconds
    while clock() < end or min(len(s) for s in samples.values()) < 5:
        for name, fn in calls.items():
            n = 0
            start = clock()
            while True:
                fn()
                n += 1
                elapsed = clock() - start
                if elapsed >= turn:
                    break
            samples[name].append(elapsed / n)
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    heavy, prose = make_message(HEAVY_LINE), make_message(PROSE_LINE)
    with tempfile.TemporaryDirectory() as top:
        key = keys.write_key(os.path.join(top, "control"), "example.com", "bench")
        store = KeyStore(os.path.join(top, "control", "domainkeys"))
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        wire = heavy.replace(b"\n", b"\r\n")
        note = sign_message(heavy, b"alice@example.com", store).note
        assert "DomainKeys" in note, note
        dkim_only = SignConfig(domainkeys=False)
        sealing = SignConfig(arc_domains=frozenset({"example.com"}), authserv_id="mx.example.org")
        forwarded = FORWARDED + heavy
        sender = b"alice@example.com"
        assert "ARC i=1" in sign_message(forwarded, sender, store, sealing).note
        calls = {
            "forwarded": lambda: sign_message(forwarded, sender, store),
            "sealed": lambda: sign_message(forwarded, sender, store, sealing),
            "ours": lambda: sign_message(heavy, sender, store),
            "ours-prose": lambda: sign_message(prose, sender, store),
            "dkim": lambda: sign_message(heavy, sender, store, dkim_only),
            "raw": lambda: key.sign(wire, padding.PKCS1v15(), hashes.SHA256()),
            "dkimpy": lambda: dkim.sign(
                wire, b"bench", b"example.com", pem, canonicalize=(b"relaxed", b"relaxed")
            ),
        }
        for fn in calls.values():  # keys loaded, imports done
            fn()
        t = medians(calls, args.seconds)
    rate = {name: 1 / seconds for name, seconds in t.items()}
    limit = rate["raw"] / 2
    print(f"message: {len(heavy)} bytes; {args.seconds:.0f} s in 10 ms turns, median per call")
    rows = [
        ("qremote DKIM + DomainKeys, heavy", rate["ours"], t["ours"]),
        ("qremote DKIM + DomainKeys, prose", rate["ours-prose"], t["ours-prose"]),
        ("qremote DKIM only, heavy", rate["dkim"], t["dkim"]),
        ("dkimpy dkim.sign (DKIM only)", rate["dkimpy"], t["dkimpy"]),
        ("raw RSA-2048 limit (2 signatures)", limit, t["raw"] * 2),
        ("forwarded, DKIM + DomainKeys", rate["forwarded"], t["forwarded"]),
        ("forwarded, DKIM + DomainKeys + ARC", rate["sealed"], t["sealed"]),
    ]
    for label, per_second, seconds in rows:
        print(f"{label:36s} {per_second:8.1f} msg/s {seconds * 1e6:7.0f} us")
    arc_set = t["sealed"] - t["forwarded"]
    ratios = [
        ("DKIM+DK heavy / dkimpy", rate["ours"] / rate["dkimpy"], "x"),
        ("DKIM only / dkimpy (same work)", rate["dkim"] / rate["dkimpy"], "x"),
        ("DKIM+DK heavy / raw limit", rate["ours"] / limit * 100, "%"),
        ("DKIM+DK prose / raw limit", rate["ours-prose"] / limit * 100, "%"),
        ("DKIM only / raw (one signature)", rate["dkim"] / rate["raw"] * 100, "%"),
        ("ARC set / its 2 raw RSA signatures", arc_set / (2 * t["raw"]), "x"),
    ]
    for label, value, unit in ratios:
        print(f"{label:36s} {value:8.2f} {unit}")


if __name__ == "__main__":
    main()
