"""Sign one outbound message: choose the domain and keys, make the signatures, say what
was done in words for the qmail-send log.

Errors are never swallowed: a message that is not headers + body, a key that exists but
cannot be used, or a failing signer raise :class:`SigningError`, and qmail-remote turns
that into ``Z`` (retry later) rather than send the message unsigned.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from qremote.control import ControlDir, ControlError
from qremote.signing import dkim, domainkeys
from qremote.signing.choose import choose, domain_of
from qremote.signing.keys import KeyProblem, KeyStore
from qremote.signing.message import MalformedMessage, parse

CANONS = ("simple", "relaxed")
DK_CANONS = ("nofws", "simple")


class SigningError(Exception):
    """Signing was needed and could not be done; the message says why."""


@dataclass(frozen=True)
class SignConfig:
    dkim: dkim.Options = dkim.Options()
    dk_canon: str = "nofws"
    domainkeys: bool = True


def load_config(control: ControlDir) -> SignConfig:
    """``control/dkimcanonicalization`` (e.g. ``relaxed/simple``), ``control/dkimexpire``
    (seconds until x=, 0 for none) and ``control/domainkeyscanonicalization`` (``nofws``,
    ``simple`` or ``off``)."""
    text = (control.line("dkimcanonicalization") or "relaxed/relaxed").strip().lower()
    header_c, _, body_c = text.partition("/")
    body_c = body_c or "simple"
    if header_c not in CANONS or body_c not in CANONS:
        raise ControlError(f"control/dkimcanonicalization: {text!r} is not like relaxed/relaxed")
    expire = control.integer("dkimexpire", 0)
    dk = (control.line("domainkeyscanonicalization") or "nofws").strip().lower()
    if dk not in (*DK_CANONS, "off"):
        raise ControlError(
            f"control/domainkeyscanonicalization: {dk!r} is not nofws, simple or off"
        )
    return SignConfig(
        dkim.Options(header_c, body_c, expire), dk if dk != "off" else "nofws", dk != "off"
    )


@dataclass(frozen=True)
class Signed:
    headers: bytes
    """Signature fields to put above the message, LF line ends as in the queue file."""
    note: str
    """One line for the report: what was signed, or that nothing was."""


def sign_message(
    message: bytes,
    sender: bytes,
    store: KeyStore,
    config: SignConfig = SignConfig(),
    now: int | None = None,
) -> Signed:
    try:
        parsed = parse(message)
    except MalformedMessage as e:
        raise SigningError(f"message cannot be signed: {e}") from None
    from_fields = parsed.get(b"from")
    from_domain = domain_of(from_fields[0].value) if from_fields else None
    sender_domain = domain_of(sender) if sender else None
    stamp = int(time.time()) if now is None else now
    try:
        choice = choose(from_domain, sender_domain, store.domain_keys, store.fallback)
        if choice is None:
            who = from_domain or sender_domain or "this message"
            return Signed(b"", f"Not signed: no key for {who} in control/domainkeys.")
        domain, keys = choice
        fields: list[bytes] = []
        done: list[str] = []
        body_hash = dkim.body_hash(parsed, config.dkim.body_canon)
        for key in keys:
            fields.insert(0, dkim.sign(parsed, domain, key, stamp, config.dkim, body_hash))
            done.append(f"DKIM d={domain} s={key.selector} {key.algorithm}")
        dk = _domainkey(parsed, store, config, keys, domain, from_domain)
        if dk is not None:
            fields.append(dk[0])
            done.append(dk[1])
    except KeyProblem as e:
        raise SigningError(f"signing key unusable: {e}") from None
    except (ValueError, TypeError, OSError) as e:
        raise SigningError(f"signing failed: {e.__class__.__name__}: {e}") from None
    headers = b"".join(fields).replace(b"\r\n", b"\n")
    return Signed(headers, "Signed: " + "; ".join(done) + ".")


def _domainkey(parsed, store: KeyStore, config: SignConfig, keys, domain, from_domain):
    """DomainKeys signs as the Sender: (else From:) domain, with that domain's RSA key,
    and not at all when that field is folded over several lines."""
    if not config.domainkeys:
        return None
    sender_fields = parsed.get(b"sender")
    identity = sender_fields or parsed.get(b"from")
    if not identity:
        return None
    if b"\r\n" in identity[0].value[:-2]:
        # DomainKeys verifiers read the identity from the field's first line only
        # (Mail::DKIM does): a folded one would give "bad identity", worse than none.
        return None
    dk_domain = domain_of(identity[0].value) if sender_fields else from_domain
    if not dk_domain:
        return None
    if dk_domain == domain:
        candidates = keys
    else:
        candidates = store.domain_keys(dk_domain)
        if not candidates:
            fallback = store.fallback()
            candidates = [fallback] if fallback is not None else []
    rsa_key = next((k for k in candidates if k.is_rsa), None)
    if rsa_key is None:
        return None
    field = domainkeys.sign(parsed, dk_domain, rsa_key, config.dk_canon)
    return field, f"DomainKeys d={dk_domain} s={rsa_key.selector} rsa-sha1"


def store_for(control_path: str) -> KeyStore:
    return KeyStore(os.path.join(control_path, "domainkeys"))
