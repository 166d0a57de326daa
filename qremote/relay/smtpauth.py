"""control/smtpauth: credentials and TLS options per relay, in a form that carries any byte.

One line per relay, keyed like Postfix's ``smtp_sasl_password_maps``: the relay as a route
names it, with or without its port, then words::

    smtp.provider.net:587 user=alice%40example.com password=s3cr%25t%20x mech=PLAIN
    [192.0.2.7]:465 user=bob password=...
    relay.lan verify=no

- ``user=`` and ``password=``: percent-encoded (``%HH`` for any byte; every other
  character stands for itself), so a password may hold spaces, ``:``, ``|``, ``%``,
  trailing blanks or bytes that are not UTF-8.
- ``mech=``: one of SCRAM-SHA-256, CRAM-MD5, PLAIN, LOGIN instead of the preference.
- ``tls=implicit`` (RFC 8314, TLS from the first byte) or ``tls=starttls``; without it,
  port 465 means implicit and every other port STARTTLS.
- ``verify=no``: TLS without checking the relay's certificate (a relay on a private
  network with a self-signed one). The password still goes only inside TLS.

``relay:port`` wins over ``relay``. Credentials written in the route itself (smtproutes or
authsenders) win over the ones here; the options here apply either way. The file should be
mode 0600, owned by qmailr (``qremote check`` says so when it is not).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from qremote.limits import AUTH_CREDENTIAL_MAX
from qremote.relay.sasl import MECHANISMS
from qremote.routing.routes import Credentials, split_host


@dataclass(frozen=True)
class Entry:
    credentials: Credentials | None = None
    mechanism: str | None = None
    tls: str | None = None
    """"implicit", "starttls", or None (decided by the port)."""
    verify: bool = True


@dataclass(frozen=True)
class AuthTable:
    entries: dict[tuple[str, int | None], Entry]
    problems: tuple[str, ...] = ()
    """One message per line that could not be used, naming its number and key only."""

    def entry(self, relay: str, port: int) -> Entry | None:
        relay = relay.lower()
        return self.entries.get((relay, port)) or self.entries.get((relay, None))


def parse(lines: list[str]) -> AuthTable:
    entries: dict[tuple[str, int | None], Entry] = {}
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"control/smtpauth line {number}"
        try:
            key = _key(words[0])
        except ValueError as e:
            problems.append(f"{where}: {e}")
            continue
        where = f"{where} (for {words[0]})"
        try:
            entries[key] = _entry(words[1:])
        except ValueError as e:
            problems.append(f"{where}: {e}")
    return AuthTable(entries, tuple(problems))


def _key(text: str) -> tuple[str, int | None]:
    host, port = split_host(text)
    if not host:
        raise ValueError("no relay name at the start of the line")
    if not port:
        return host.lower(), None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("the relay's port is not a number from 1 to 65535")
    return host.lower(), int(port)


def _entry(words: list[str]) -> Entry:
    """The words after the relay. Errors name the word's name, never its value."""
    values: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or name not in ("user", "password", "mech", "tls", "verify"):
            raise ValueError(
                "each word must be user=, password=, mech=, tls= or verify= "
                f"(word {len(values) + 1} is not)"
            )
        if name in values:
            raise ValueError(f"{name}= given twice")
        values[name] = value
    mechanism = values.get("mech")
    if mechanism is not None:
        mechanism = mechanism.upper()
        if mechanism not in MECHANISMS:
            raise ValueError(f"mech={mechanism[:40]!r} is not one of {', '.join(MECHANISMS)}")
    tls = values.get("tls")
    if tls not in (None, "implicit", "starttls"):
        raise ValueError("tls= must be implicit or starttls")
    verify = values.get("verify", "yes")
    if verify not in ("yes", "no"):
        raise ValueError("verify= must be yes or no")
    credentials = None
    if "user" in values or "password" in values:
        if "user" not in values or "password" not in values:
            raise ValueError("user= and password= go together")
        user, password = unquote_to_bytes(values["user"]), unquote_to_bytes(values["password"])
        if not user:
            raise ValueError("user= is empty")
        if len(user) > AUTH_CREDENTIAL_MAX or len(password) > AUTH_CREDENTIAL_MAX:
            raise ValueError(f"user or password longer than {AUTH_CREDENTIAL_MAX} bytes")
        credentials = Credentials(user, password)
    return Entry(credentials, mechanism, tls, verify == "yes")
