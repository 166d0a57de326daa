"""Sign one outbound message: choose the domain and keys, make the signatures, say what
was done in words for the qmail-send log.

Local errors are never swallowed: a key that exists but cannot be used, or a failing
signer, raise :class:`SigningError`, and qmail-remote turns that into ``Z`` (retry later,
once the administrator has fixed the key) rather than send the message unsigned.

A message that cannot be read as header fields and a body (empty, a first line starting
with white space, a non-header line before the empty line) is another matter: no retry
will ever sign it. When no key applies to it, it goes out exactly as qmail would send
it. When a key does apply, ``control/unsignable`` decides: ``send`` (the default) sends
it unsigned and says why in the report, as qmail always did; ``bounce`` refuses it for
good (:class:`Unsignable`, a ``D``), for sites that would rather return such mail than
have it leave without their signature.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from qremote import report
from qremote.signing import arc, dkim, domainkeys
from qremote.signing.choose import choose, domain_of
from qremote.signing.keys import KeyProblem, KeyStore
from qremote.signing.message import MalformedMessage, parse

CANONS = ("simple", "relaxed")
DK_CANONS = ("nofws", "simple")


class SigningError(Exception):
    """Signing was needed and could not be done for a local reason; the text says why."""


class Unsignable(Exception):
    """A key applies, the message cannot be signed, and control/unsignable says bounce."""


@dataclass(frozen=True)
class SignConfig:
    """How to sign. The defaults are the signer's own (tests, benchmarks, ``qremote sign``
    without control files agree with them: tests/test_settings.py); a delivery's come
    from the control files through :func:`qremote.settings.signing_config`."""

    dkim: dkim.Options = dkim.Options()
    dk_canon: str = "nofws"
    domainkeys: bool = True
    unsignable: str = "send"
    """What to do with a message a key applies to but which cannot be signed."""
    arc_domains: frozenset[str] = frozenset()
    """Signing domains whose forwarded mail is ARC-sealed (control/arcsign); ``*``: all."""
    authserv_id: str = "localhost"
    """Ours (control/authservid, else control/me): whose Authentication-Results a
    forwarded message must carry to be sealed."""

    def seals(self, domain: str) -> bool:
        return domain in self.arc_domains or "*" in self.arc_domains


@dataclass(frozen=True)
class Signed:
    headers: bytes
    """Signature fields to put above the message, LF line ends as in the queue file."""
    note: str
    """One line for the report: what was signed, or that nothing was."""
    algorithms: tuple[str, ...] = ()
    """Of each signature made: ``rsa-sha256``, ``ed25519-sha256`` (DKIM), ``domainkeys``,
    ``arc`` (an ARC set: its two signatures)."""
    unsigned: str = ""
    """Why nothing was signed, when so: ``no-key`` or ``unsignable`` (for the counts)."""


def sign_message(
    message: bytes,
    sender: bytes,
    store: KeyStore,
    config: SignConfig = SignConfig(),
    now: int | None = None,
) -> Signed:
    sender_domain = domain_of(sender) if sender else None
    try:
        parsed = parse(message)
    except MalformedMessage as e:
        return _unsignable(message, sender_domain, store, config, str(e))
    from_fields = parsed.get(b"from")
    from_domain = domain_of(from_fields[0].value) if from_fields else None
    stamp = int(time.time()) if now is None else now
    try:
        choice = choose(from_domain, sender_domain, store.domain_keys, store.fallback)
        if choice is None:
            return _no_key(from_domain or sender_domain)
        domain, keys = choice
        fields: list[bytes] = []
        done: list[str] = []
        made: list[str] = []
        body_hash = dkim.body_hash(parsed, config.dkim.body_canon)
        for key in keys:
            fields.insert(0, dkim.sign(parsed, domain, key, stamp, config.dkim, body_hash))
            done.append(report.signed_dkim(domain, key.selector, key.algorithm))
            made.append(key.algorithm)
        dk = _domainkey(parsed, store, config, keys, domain, from_domain)
        if dk is not None:
            fields.append(dk[0])
            done.append(dk[1])
            made.append("domainkeys")
        elif config.domainkeys and _idn_identity(parsed):
            done.append(report.NOT_DK_IDN)
        if config.seals(domain):
            relaxed_bh = body_hash if config.dkim.body_canon == arc.CANON else None
            sealed = _arc(parsed, config, domain, keys, stamp, relaxed_bh)
            if sealed is not None:
                if sealed[0]:
                    fields.insert(0, sealed[0])
                    made.append("arc")
                done.append(sealed[1])
    except KeyProblem as e:
        raise SigningError(f"signing key unusable: {e}") from None
    except (ValueError, TypeError, OSError) as e:
        raise SigningError(f"signing failed: {e.__class__.__name__}: {e}") from None
    headers = b"".join(fields).replace(b"\r\n", b"\n")
    return Signed(headers, report.note_signed(done), tuple(made))


def _arc(parsed, config: SignConfig, domain, keys, stamp, bh) -> tuple[bytes, str] | None:
    """(the ARC set, the note) for a forwarded message; (b"", why) when it is not
    sealed; None when it did not come in through our filter (signing/arc.py)."""
    planned = arc.plan(parsed, config.authserv_id)
    if planned is None:
        return None
    key = arc.rsa_key(keys)
    if isinstance(planned, str) or key is None:
        why = planned if isinstance(planned, str) else f"no RSA key for {domain}"
        return b"", report.not_sealed(why)
    fields = arc.seal(parsed, planned, domain, key, stamp, bh)
    return fields, report.sealed_arc(planned.instance, planned.cv.decode(), domain, key.selector)


def _no_key(who: str | None) -> Signed:
    return Signed(b"", report.note_no_key(who), unsigned="no-key")


def _unsignable(
    message: bytes, sender_domain: str | None, store: KeyStore, config: SignConfig, why: str
) -> Signed:
    """A message that is not header fields and a body: see the module's docstring."""
    from_domain = _loose_from_domain(message)
    try:
        choice = choose(from_domain, sender_domain, store.domain_keys, store.fallback)
    except KeyProblem as e:
        raise SigningError(f"signing key unusable: {e}") from None
    if choice is None:
        return _no_key(from_domain or sender_domain)
    if config.unsignable == "bounce":
        raise Unsignable(why)
    return Signed(b"", report.note_sent_unsigned(why), unsigned="unsignable")


def _loose_from_domain(message: bytes) -> str | None:
    """The domain of a From: line among the lines before the first empty one, read as
    leniently as a mail reader would: only to know whether a key would apply."""
    for line in message.split(b"\n", 200)[:200]:
        if not line.strip(b"\r"):
            break
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"from":
            return domain_of(value)
    return None


def _identity(parsed):
    return parsed.get(b"sender") or parsed.get(b"from")


def _idn_identity(parsed) -> bool:
    """Is the DomainKeys identity (Sender:, else From:) at a domain that is not ASCII?"""
    identity = _identity(parsed)
    if not identity:
        return False
    value = identity[0].value
    return b"@" in value and not value.rsplit(b"@", 1)[1].isascii()


def _domainkey(parsed, store: KeyStore, config: SignConfig, keys, domain, from_domain):
    """DomainKeys signs as the Sender: (else From:) domain, with that domain's RSA key,
    and not at all when that field is folded over several lines."""
    if not config.domainkeys:
        return None
    sender_fields = parsed.get(b"sender")
    identity = _identity(parsed)
    if not identity:
        return None
    if _idn_identity(parsed):
        return None  # measured: Mail::DKIM says "bad identity"; the note says why
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
    return field, report.signed_domainkeys(dk_domain, rsa_key.selector)


def store_for(control_path: str) -> KeyStore:
    return KeyStore(os.path.join(control_path, "domainkeys"))
