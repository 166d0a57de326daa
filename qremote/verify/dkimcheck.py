"""DKIM verification, one signature at a time, each outcome named as RFC 8601 names it.

The signature's tags and its key record are judged first by our own table
(:mod:`qremote.verify.dkimrules`, with the RFC's words for each row): ``dkim.verify()``
would answer False or raise alike for a DNS time-out, a missing key, an unsupported
algorithm and a bad signature, and gets some of them wrong. Only a signature and key
record that passed the table reach dkimpy, which canonicalizes, hashes and checks the
cryptography (``DKIM.verify_sig`` with the key record as we read it); its log then tells
a key it cannot parse from a signature that did not verify.

The work is bounded, because anyone can send a message with a hundred signatures over a
large body, each of which would cost a pass over the body: at most
:data:`~qremote.limits.VERIFY_MAX_DKIM_SIGNATURES` are evaluated; a signature's body hash
is checked against a cache of dkimpy's own canonicalized bodies first, so signatures
that share a canonicalization and length share one pass and a wrong body hash costs no
more; and once the message's time budget (``dkimverifytimeout``, the same that bounds
its DNS look-ups) is spent, the rest are not evaluated. Those past the count are
reported ``neutral``, with the reason, as RFC 8601 section 2.7.1 has it for signatures
that "were not otherwise able to be processed"; those past the time ``temperror``, like
a key look-up that timed out.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time

import dkim

from qremote.limits import VERIFY_MAX_DKIM_SIGNATURES
from qremote.signing.tags import parse_tags
from qremote.verify import dkimrules, rsacheck
from qremote.verify.results import TIME_SPENT, Result, past_the_count
from qremote.verify.txt import DnsTemporary, TxtLookup


class _Collect(logging.Handler):
    """dkimpy logs at ERROR level exactly the key problems it turns into False."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _props(tags: dict[bytes, bytes]) -> dict[str, str]:
    def get(name: bytes) -> str:
        return tags.get(name, b"").decode("utf-8", "replace")

    domain = get(b"d")
    return {
        "header.d": domain,
        "header.i": get(b"i") or (f"@{domain}" if domain else ""),
        "header.s": get(b"s"),
        "header.a": get(b"a"),
    }


def header_fields(message: bytes) -> list[bytes]:
    """The header block's fields in message order, each with its continuation lines."""
    head = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    return re.split(rb"\r?\n(?![ \t])", head)


def signature_fields(message: bytes) -> list[bytes]:
    """The values of the DKIM-Signature fields, unfolded, in message order."""
    fields = header_fields(message)
    prefix = b"dkim-signature:"
    return [f[len(prefix) :] for f in fields if f[: len(prefix)].lower() == prefix]


class _BodyHashes:
    """Body hashes by (canonicalization, hash, length), computed once per message with
    dkimpy's own canonicalization, so our shortcut can never disagree with dkimpy. It is
    asked only about signatures :mod:`dkimrules` accepted: a=, c=, l= and bh= are sound."""

    def __init__(self, checker: dkim.DKIM) -> None:
        self.checker = checker
        self.bodies: dict[bytes, bytes] = {}
        self.digests: dict[tuple[bytes, bytes, int | None], bytes] = {}

    def _body(self, c: bytes) -> bytes:
        """The body canonicalized as ``c=`` says, once per canonicalization."""
        body_c = c.partition(b"/")[2] or b"simple"
        if body_c not in self.bodies:
            policy = dkim.CanonicalizationPolicy.from_c_value(c)
            self.bodies[body_c] = policy.canonicalize_body(self.checker.body)
        return self.bodies[body_c]

    def mismatch(self, tags: dict[bytes, bytes]) -> bool:
        """True when the signature's bh= is not the body's hash."""
        _, digest = dkimrules.ALGORITHMS[tags[b"a"].lower()]
        c = tags.get(b"c", b"simple/simple").lower()
        limit = int(tags[b"l"]) if b"l" in tags else None
        key = (c.partition(b"/")[2] or b"simple", digest, limit)
        if key not in self.digests:
            body = self._body(c)[:limit]
            self.digests[key] = hashlib.new(digest.decode(), body).digest()
        return self.digests[key] != base64.b64decode(tags[b"bh"])

    def unsigned(self, tags: dict[bytes, bytes]) -> int:
        """Bytes of the canonicalized body after an ``l=`` limit: text a forwarder (or
        anyone) may have appended without breaking the signature."""
        if b"l" not in tags:
            return 0
        c = tags.get(b"c", b"simple/simple").lower()
        return max(0, len(self._body(c)) - int(tags[b"l"]))


def _signature_result(
    checker: dkim.DKIM,
    field: tuple[bytes, bytes],
    index: int,
    lookup: TxtLookup,
    hashes: _BodyHashes,
    now: int,
    unsigned_tail: str,
    logged: list[str],
) -> Result:
    """The result for one signature: our table (dkimrules) first, then dkimpy's hashing
    and cryptography on a signature and key record that passed it."""
    finding, tags = dkimrules.signature_problem(field[1], now)
    props = _props(tags or parse_tags(field[1]))
    if index >= VERIFY_MAX_DKIM_SIGNATURES:
        why = past_the_count(VERIFY_MAX_DKIM_SIGNATURES)
        return Result("dkim", "neutral", why, props)
    if time.monotonic() >= lookup.deadline:
        why = TIME_SPENT
        return Result("dkim", "temperror", why, props)
    if finding is not None:
        return Result("dkim", finding.result, finding.reason, props)
    if hashes.mismatch(tags):
        return Result("dkim", "fail", "body hash did not verify", props)
    selector, domain = (tags[t].decode("ascii", "replace") for t in (b"s", b"d"))
    name = f"{selector}._domainkey.{domain}"
    try:
        record = lookup.txt(name)
    except DnsTemporary as e:
        return Result("dkim", "temperror", f"key lookup: {e}", props)
    finding, clean = dkimrules.key_problem(record, name, tags)
    if finding is not None:
        return Result("dkim", finding.result, finding.reason, props)
    try:
        sig = dkim.util.parse_tag_value(field[1])
        sig[b"a"] = sig[b"a"].lower()
        include = [h.lower() for h in re.split(rb"\s*:\s*", sig[b"h"])]
        good = rsacheck.verify(checker, sig, include, field, clean)
    except dkim.util.InvalidTagValueList:
        return Result("dkim", "permerror", dkimrules.TABLE["tags"][1], props)
    except dkim.ValidationError as e:
        return Result("dkim", "fail", str(e), props)
    except (dkim.KeyFormatError, dkim.UnparsableKeyError, dkim.UnknownKeyTypeError) as e:
        return Result("dkim", "permerror", f"key: {e}", props)
    except dkim.DKIMException as e:
        return Result("dkim", "permerror", str(e), props)
    except Exception as e:  # noqa: BLE001 - a verifier bug is ours, not the sender's
        return Result("dkim", "temperror", f"verifier: {e.__class__.__name__}", props)
    if good:
        extra = hashes.unsigned(tags)
        if not extra:
            return Result("dkim", "pass", "", props)
        why = f"l= leaves {extra} bytes of the body unsigned"
        return Result("dkim", "policy" if unsigned_tail == "policy" else "pass", why, props)
    if logged:
        return Result("dkim", "permerror", " ".join(logged), props)
    return Result("dkim", "fail", "signature did not verify", props)


def verify(message: bytes, lookup: TxtLookup, unsigned_tail: str = "pass") -> list[Result]:
    """One result per DKIM-Signature field. ``unsigned_tail`` (``control/dkimlength``)
    says what a good signature with ``l=`` over a body that goes on past it gets:
    ``pass`` with a comment saying how much is unsigned, or ``policy`` (RFC 8601 section
    2.7.1: signed, but not acceptable to us) for sites that will not vouch for text the
    signer did not sign."""
    sigs = signature_fields(message)
    if not sigs:
        return []
    handler = _Collect()
    logger = logging.Logger("qremote.dkimverify")  # not registered: nothing accumulates
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR)  # dkimpy debug-logs every step; only errors are wanted
    results = []
    try:
        checker = dkim.DKIM(message, logger=logger)
    except Exception as e:  # noqa: BLE001 - dkimpy's parser fails with IndexError too
        why = f"message: {e}" if isinstance(e, dkim.DKIMException) else "message: not parseable"
        return [Result("dkim", "permerror", why, _props(parse_tags(s))) for s in sigs]
    hashes = _BodyHashes(checker)
    fields = [(n, v) for n, v in checker.headers if n.lower() == b"dkim-signature"]
    if len(fields) != len(sigs):  # dkimpy read the header block otherwise than we did
        why = "message: not parseable"
        return [Result("dkim", "permerror", why, _props(parse_tags(s))) for s in sigs]
    now = int(time.time())
    for i, field in enumerate(fields):
        handler.messages.clear()
        result = _signature_result(
            checker, field, i, lookup, hashes, now, unsigned_tail, handler.messages
        )
        results.append(result)
    logger.removeHandler(handler)
    return results
