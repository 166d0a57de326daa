"""The SASL client exchanges qremote speaks in SMTP AUTH (RFC 4954), sans I/O.

Each mechanism is an object the conversation feeds the relay's challenges (decoded from
base64) and that answers with the next response (to be encoded); the conversation knows
nothing of any mechanism's insides. Written from the RFCs:

- SCRAM-SHA-256 (RFC 5802, RFC 7677): the password never crosses the wire, and the relay
  must prove it knows it too (its signature is checked before we believe a 235).
  No channel binding (``n,,``): the TLS underneath is what protects the exchange.
- CRAM-MD5 (RFC 2195): HMAC-MD5 of the relay's challenge.
- PLAIN (RFC 4616): user and password in the initial response.
- LOGIN (draft-murchison-sasl-login): user, then password, each on request.

They are preferred in that order (:data:`PREFERENCE`); a route may name one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata

from qremote.limits import SCRAM_MAX_ITERATIONS
from qremote.routing.routes import Credentials

PREFERENCE = ("SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN")


class SaslError(Exception):
    """The relay said something the mechanism cannot accept; the text says what."""


class Mechanism:
    """One exchange. :meth:`initial` is the initial response (None: wait for a 334),
    :meth:`respond` answers each challenge, :meth:`finished` says whether a 235 may be
    believed (a mechanism with mutual authentication must have checked the relay)."""

    name = ""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def initial(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        raise SaslError(f"{self.name} expects no challenge")

    def finished(self) -> bool:
        return True


class Plain(Mechanism):
    name = "PLAIN"

    def initial(self) -> bytes | None:
        # No authorization identity: we act as the user we log in as.
        return b"\0" + self.credentials.user + b"\0" + self.credentials.password


class Login(Mechanism):
    """Answers the first prompt with the user and the second with the password, whatever
    the prompts say (servers word them differently)."""

    name = "LOGIN"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__(credentials)
        self._step = 0

    def respond(self, challenge: bytes) -> bytes:
        self._step += 1
        if self._step == 1:
            return self.credentials.user
        if self._step == 2:
            return self.credentials.password
        raise SaslError("LOGIN: more than two prompts")


class CramMd5(Mechanism):
    name = "CRAM-MD5"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__(credentials)
        self._answered = False

    def respond(self, challenge: bytes) -> bytes:
        if self._answered:
            raise SaslError("CRAM-MD5: a second challenge")
        self._answered = True
        digest = hmac.new(self.credentials.password, challenge, hashlib.md5).hexdigest()
        return self.credentials.user + b" " + digest.encode()


def saslprep(text: str) -> str:
    """RFC 4013 for a query string (unassigned code points allowed), as RFC 5802 asks of
    SCRAM user names and passwords. ValueError names what is prohibited."""
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    for c in normal:
        if any(table(c) for table in prohibited):
            raise ValueError(f"character U+{ord(c):04X} is not allowed by SASLprep")
    if any(stringprep.in_table_d1(c) for c in normal):
        if any(stringprep.in_table_d2(c) for c in normal):
            raise ValueError("mixes right-to-left and left-to-right text")
        if not (stringprep.in_table_d1(normal[0]) and stringprep.in_table_d1(normal[-1])):
            raise ValueError("right-to-left text must start and end with such a character")
    return normal


def _prepared(value: bytes) -> bytes:
    """SASLprep of a UTF-8 value; bytes that are not UTF-8 go as they are (there is no
    string to prepare, and the relay stores what it was given)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return value
    try:
        return saslprep(text).encode("utf-8")
    except ValueError as e:
        raise SaslError(f"SCRAM-SHA-256: the credentials are not usable: {e}") from None


class ScramSha256(Mechanism):
    name = "SCRAM-SHA-256"
    _hash = "sha256"

    def __init__(self, credentials: Credentials, nonce: str | None = None) -> None:
        super().__init__(credentials)
        self._nonce = nonce or secrets.token_urlsafe(24)
        user = _prepared(credentials.user).replace(b"=", b"=3D").replace(b",", b"=2C")
        self._first_bare = b"n=" + user + b",r=" + self._nonce.encode()
        self._server_signature: bytes | None = None
        self._verified = False

    def initial(self) -> bytes | None:
        return b"n,," + self._first_bare

    def respond(self, challenge: bytes) -> bytes:
        if self._server_signature is None:
            return self._client_final(challenge)
        if self._verified:
            raise SaslError("SCRAM-SHA-256: a challenge after the relay's signature")
        fields = _attributes(challenge)
        if "e" in fields:
            raise SaslError(
                f"SCRAM-SHA-256: the relay refused: {fields['e'].decode('ascii', 'replace')}"
            )
        try:
            signature = base64.b64decode(fields.get("v", b""), validate=True)
        except ValueError:
            signature = b""
        if not hmac.compare_digest(signature, self._server_signature):
            raise SaslError(
                "SCRAM-SHA-256: the relay's signature is wrong (it does not know the password)"
            )
        self._verified = True
        return b""

    def finished(self) -> bool:
        return self._verified

    def _client_final(self, server_first: bytes) -> bytes:
        fields = _attributes(server_first)
        nonce, salt_text, count_text = fields.get("r"), fields.get("s"), fields.get("i")
        if "m" in fields:
            raise SaslError("SCRAM-SHA-256: the relay asks for an extension we do not know")
        if nonce is None or salt_text is None or count_text is None:
            raise SaslError("SCRAM-SHA-256: the relay's first message lacks r, s or i")
        if not nonce.startswith(self._nonce.encode()) or len(nonce) == len(self._nonce):
            raise SaslError("SCRAM-SHA-256: the relay's nonce does not extend ours")
        if not count_text.isdigit() or not 0 < int(count_text) <= SCRAM_MAX_ITERATIONS:
            raise SaslError(f"SCRAM-SHA-256: iteration count not from 1 to {SCRAM_MAX_ITERATIONS}")
        try:
            salt = base64.b64decode(salt_text, validate=True)
        except ValueError:
            raise SaslError("SCRAM-SHA-256: the salt is not base64") from None
        salted = hashlib.pbkdf2_hmac(
            self._hash, _prepared(self.credentials.password), salt, int(count_text)
        )
        client_key = hmac.digest(salted, b"Client Key", self._hash)
        stored_key = hashlib.new(self._hash, client_key).digest()
        without_proof = b"c=" + base64.b64encode(b"n,,") + b",r=" + nonce
        message = self._first_bare + b"," + server_first + b"," + without_proof
        signature = hmac.digest(stored_key, message, self._hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self._hash)
        self._server_signature = hmac.digest(server_key, message, self._hash)
        return without_proof + b",p=" + base64.b64encode(proof)


def _attributes(message: bytes) -> dict[str, bytes]:
    """SCRAM's ``a=value,b=value`` (values may hold ``=``, never ``,``)."""
    fields: dict[str, bytes] = {}
    for part in message.split(b","):
        name, sep, value = part.partition(b"=")
        if sep and len(name) == 1:
            fields.setdefault(name.decode("ascii", "replace"), value)
    return fields


MECHANISMS: dict[str, type[Mechanism]] = {
    "SCRAM-SHA-256": ScramSha256,
    "CRAM-MD5": CramMd5,
    "PLAIN": Plain,
    "LOGIN": Login,
}


def pick_mechanism(offered: tuple[str, ...], wanted: str | None) -> str | None:
    """The mechanism to use: the route's if it names one (None if the relay does not
    offer it), else the first of :data:`PREFERENCE` the relay offers."""
    upper = {m.upper() for m in offered}
    if wanted is not None:
        return wanted if wanted in upper else None
    return next((m for m in PREFERENCE if m in upper), None)
