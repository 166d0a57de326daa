"""bench/sign: messages signed per second, against dkimpy and against raw RSA.

A 10 KB message is signed the way qmail-remote signs it (DKIM rsa-sha256 relaxed/relaxed
plus DomainKeys rsa-sha1 nofws, 2048-bit key). Peers measured in the same run:
- ``dkim.sign`` from dkimpy (DKIM only, pure-Python RSA);
- the raw ``cryptography`` RSA-2048 signing rate, halved because a message carries two
  RSA signatures: the limit no signer can beat.

    python bench/sign.py [--seconds 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402

from qremote.signing.keys import KeyStore  # noqa: E402
from qremote.signing.sign import SignConfig, sign_message  # noqa: E402
from tests.support import keys  # noqa: E402


def make_message() -> bytes:
    head = (
        b"From: Alice <alice@example.com>\nTo: Bob <bob@example.net>\nSubject: benchmark\n"
        b"Date: Sun, 22 Nov 2026 12:00:00 +0000\nMessage-ID: <bench@example.com>\n"
        b"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
    )
    line = b"The quick brown fox jumps over the lazy dog, again and  again.\t \n"
    body = line * ((10 * 1024 - len(head)) // len(line) + 1)
    return head + body


def rate(fn, seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    message = make_message()
    with tempfile.TemporaryDirectory() as top:
        key = keys.write_key(os.path.join(top, "control"), "example.com", "bench")
        store = KeyStore(os.path.join(top, "control", "domainkeys"))
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        wire = message.replace(b"\n", b"\r\n")
        note = sign_message(message, b"alice@example.com", store).note
        assert "DomainKeys" in note, note

        def ours():
            sign_message(message, b"alice@example.com", store)

        dkim_only = SignConfig(domainkeys=False)

        def ours_dkim_only():
            sign_message(message, b"alice@example.com", store, dkim_only)

        def dkimpy():
            dkim.sign(wire, b"bench", b"example.com", pem, canonicalize=(b"relaxed", b"relaxed"))

        def raw():
            key.sign(wire, padding.PKCS1v15(), hashes.SHA256())

        results: dict[str, list[float]] = {"ours": [], "dkim": [], "dkimpy": [], "raw": []}
        for _ in range(args.rounds):
            results["ours"].append(rate(ours, args.seconds))
            results["dkim"].append(rate(ours_dkim_only, args.seconds))
            results["dkimpy"].append(rate(dkimpy, args.seconds / 4))
            results["raw"].append(rate(raw, args.seconds))
    ours_m = statistics.median(results["ours"])
    dkim_m = statistics.median(results["dkim"])
    dkimpy_m = statistics.median(results["dkimpy"])
    limit = statistics.median(results["raw"]) / 2
    print(f"message: {len(message)} bytes; {args.rounds} rounds, medians")
    print(f"qremote (DKIM + DomainKeys)     {ours_m:8.1f} msg/s")
    print(f"qremote (DKIM only)             {dkim_m:8.1f} msg/s")
    print(f"dkimpy dkim.sign (DKIM only)    {dkimpy_m:8.1f} msg/s")
    print(f"raw RSA-2048 limit (2 sigs)     {limit:8.1f} msg/s")
    print(f"qremote DKIM+DK / dkimpy        {ours_m / dkimpy_m:8.1f} x")
    print(f"qremote DKIM / dkimpy DKIM      {dkim_m / dkimpy_m:8.1f} x")
    print(f"qremote DKIM+DK / raw limit     {ours_m / limit * 100:8.1f} %")
    print(f"qremote DKIM / raw (1 sig)      {dkim_m / (limit * 2) * 100:8.1f} %")


if __name__ == "__main__":
    main()
