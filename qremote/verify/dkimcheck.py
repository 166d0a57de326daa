"""DKIM verification with dkimpy, one signature at a time, each outcome named.

``dkim.verify()`` answers False alike for a DNS time-out, a missing key and a bad
signature, and raises on some malformed messages. So each signature is checked with
``DKIM(...).verify(idx=i, dnsfunc=...)`` where the DNS function raises our own exception
for temporary trouble, and dkimpy's log tells a key problem from a failed signature.
"""

from __future__ import annotations

import logging
import re

import dkim

from qremote.signing.tags import parse_tags
from qremote.verify.results import Result
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


def signature_fields(message: bytes) -> list[bytes]:
    """The values of the DKIM-Signature fields, unfolded, in message order."""
    head = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    fields = re.split(rb"\r?\n(?![ \t])", head)
    prefix = b"dkim-signature:"
    return [f[len(prefix) :] for f in fields if f[: len(prefix)].lower() == prefix]


def verify(message: bytes, lookup: TxtLookup) -> list[Result]:
    sigs = signature_fields(message)
    if not sigs:
        return []
    handler = _Collect()
    logger = logging.Logger("qremote.dkimverify")  # not registered: nothing accumulates
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    results = []
    try:
        checker = dkim.DKIM(message, logger=logger)
    except dkim.DKIMException as e:
        return [Result("dkim", "permerror", f"message: {e}", _props(parse_tags(s))) for s in sigs]
    for i, sig in enumerate(sigs):
        props = _props(parse_tags(sig))
        handler.messages.clear()

        def dnsfunc(name, timeout=5):
            qname = name.decode("ascii", "replace") if isinstance(name, bytes) else name
            return lookup.txt(qname)

        try:
            good = checker.verify(idx=i, dnsfunc=dnsfunc)
        except DnsTemporary as e:
            results.append(Result("dkim", "temperror", f"key lookup: {e}", props))
            continue
        except dkim.ValidationError as e:
            results.append(Result("dkim", "fail", str(e), props))
            continue
        except (dkim.KeyFormatError, dkim.UnparsableKeyError, dkim.UnknownKeyTypeError) as e:
            results.append(Result("dkim", "permerror", f"key: {e}", props))
            continue
        except dkim.DKIMException as e:
            results.append(Result("dkim", "permerror", str(e), props))
            continue
        except Exception as e:  # noqa: BLE001 - a verifier bug is ours, not the sender's
            results.append(Result("dkim", "temperror", f"verifier: {e.__class__.__name__}", props))
            continue
        if good:
            results.append(Result("dkim", "pass", "", props))
            continue
        if handler.messages:
            results.append(Result("dkim", "permerror", " ".join(handler.messages), props))
        else:
            results.append(Result("dkim", "fail", "signature did not verify", props))
    logger.removeHandler(handler)
    return results
