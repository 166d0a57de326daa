"""The control files: one table of every file qremote reads, and the settings of a delivery.

:data:`CONTROL_FILES` names each file once, with its default, the programs that read it,
what it means and, for the files a delivery reads, the parser that reads it and the
:class:`Settings` field it fills: :func:`load_settings` is a loop over the table, ``qremote
check`` checks every file in it by the same parsers, and README's control-file table is
held to it by a test. qmail's rules apply (``qremote.control``): a missing file is its
default, one that cannot be read or makes no sense is a ``ControlError`` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from qremote.authres import authserv_id
from qremote.control import ControlDir, ControlError
from qremote.groups import rules as group_rules
from qremote.intl import idn
from qremote.relay import smtpauth
from qremote.relay.smtpauth import AuthTable
from qremote.routing import source
from qremote.routing.addresses import parse_nameserver
from qremote.routing.ipme import local_addresses
from qremote.shaping import config as shaping_config
from qremote.signing import dkim
from qremote.signing.sign import CANONS, DK_CANONS, SignConfig
from qremote.smtp.pool import Limits
from qremote.tls.policy import PolicyFiles, read_policy_files

V = TypeVar("V")
E = TypeVar("E", bound=Enum)

REMOTE = "qmail-remote"
"""qmail-remote and qremoted: they read the same files."""
VERIFY = "qremote-dkimverify"
ROTATE = "qremote keys rotate"


class DaneMode(Enum):
    """control/dane."""

    ON = "on"
    """DANE for MX hosts, believed only from a resolver on loopback (the default)."""
    OFF = "off"
    FIRST = "first"
    """DANE even where ``tlshosts/<mx>.pem`` exists."""


class HeaderMode(Enum):
    """control/utf8headers: header fields that are not ASCII, to a server without SMTPUTF8."""

    BOUNCE = "bounce"
    """RFC 6531's rule: the next MX, ``D`` when none offers SMTPUTF8."""
    SEND = "send"
    """As qmail and Postfix send them, with a note (the default)."""


class Switch(Enum):
    """An on/off file (control/mtasts)."""

    ON = "on"
    OFF = "off"


Parser = Callable[[ControlDir], Any]


@dataclass(frozen=True)
class ControlFile:
    name: str
    kind: str
    """line, integer, list, map, lines, flag (exists or not), folder, file."""
    default: object
    readers: tuple[str, ...]
    what: str
    setting: str | None = None
    """The :class:`Settings` field this file fills; None when a delivery does not read it,
    or reads it with another file (``me`` with ``helohost``), whose parser reads both."""
    parse: Parser | None = None
    """Reads the file (and those read with it) into the field's value; ControlError."""


# -- the parsers (each reads its defaults from the table) ---------------------------------


def integer(control: ControlDir, name: str) -> int:
    """A whole-number file, with its default from the table."""
    entry = BY_NAME[name]
    assert entry.kind == "integer" and isinstance(entry.default, int)
    return control.integer(name, entry.default)


def choice(control: ControlDir, name: str, kind: type[E]) -> E:
    """A one-word file whose words are ``kind``'s values, with its default from the table."""
    default = BY_NAME[name].default
    assert isinstance(default, str)
    value = (control.line(name) or default).strip().lower()
    words = [m.value for m in kind]
    if value not in words:
        said = ", ".join(words[:-1]) + " or " + words[-1]
        raise ControlError(f"control/{name}: {value[:40]!r} is not {said}")
    return kind(value)


def _integer(name: str) -> Parser:
    return lambda control: integer(control, name)


def helo_name(control: ControlDir) -> str:
    """control/helohost, else control/me: the EHLO name."""
    helo, where = control.line("helohost"), "control/helohost"
    if helo is None:
        helo, where = control.line("me"), "control/me"
    if helo is None:
        raise ControlError("control/me and control/helohost are both missing")
    if not helo:
        raise ControlError("control/helohost (or control/me) is empty")
    if not helo.isascii() or not helo.isprintable():
        raise ControlError(f"{where}: {helo!r} is not a host name (not printable ASCII)")
    return helo


def signing_config(control: ControlDir) -> SignConfig:
    """``control/dkimcanonicalization`` (e.g. ``relaxed/simple``), ``control/dkimexpire``
    (seconds until x=, 0 for none), ``control/domainkeyscanonicalization`` (``nofws``,
    ``simple`` or ``off``), ``control/unsignable``, and for ARC ``control/arcsign`` and
    the authserv-id (``control/authservid``, else ``control/me``)."""
    default = BY_NAME["dkimcanonicalization"].default
    text = (control.line("dkimcanonicalization") or str(default)).strip().lower()
    header_c, _, body_c = text.partition("/")
    body_c = body_c or "simple"
    if header_c not in CANONS or body_c not in CANONS:
        raise ControlError(f"control/dkimcanonicalization: {text!r} is not like relaxed/relaxed")
    expire = integer(control, "dkimexpire")
    default = BY_NAME["domainkeyscanonicalization"].default
    dk = (control.line("domainkeyscanonicalization") or str(default)).strip().lower()
    if dk not in (*DK_CANONS, "off"):
        raise ControlError(
            f"control/domainkeyscanonicalization: {dk!r} is not nofws, simple or off"
        )
    default = BY_NAME["unsignable"].default
    unsignable = (control.line("unsignable") or str(default)).strip().lower()
    if unsignable not in ("send", "bounce"):
        raise ControlError(f"control/unsignable: {unsignable!r} is not send or bounce")
    return SignConfig(
        dkim.Options(header_c, body_c, expire),
        dk if dk != "off" else "nofws",
        dk != "off",
        unsignable,
        arc_domains(control),
        authserv_id(control),
    )


def arc_domains(control: ControlDir) -> frozenset[str]:
    """control/arcsign: one signing domain a line (an IDN in either form), or ``*``."""
    return frozenset(
        "*" if line.strip() == "*" else idn.key(line.strip().lower().rstrip("."))
        for line in control.lines("arcsign") or []
        if line.strip()
    )


def report_contact(control: ControlDir) -> str:
    """The sender of our TLS reports: control/tlsrptcontact, else postmaster@ control/me."""
    said = (control.line("tlsrptcontact") or "").strip()
    return said or f"postmaster@{(control.line('me') or 'localhost').strip()}"


def _idn_keys(table: dict[str, V]) -> dict[str, V]:
    """Keys in the form lookups use: a domain written as an IDN (U-labels) matches its
    A-label form, which is how every delivery looks it up."""
    return {idn.key(k): v for k, v in table.items()}


def _groups(control: ControlDir) -> group_rules.Rules:
    """control/mxgroups, patterns in A-label form; bad lines are skipped (check names them)."""
    rules = group_rules.parse(control.lines("mxgroups") or [])[0]
    named = tuple(
        group_rules.Rule(r.name, r.limit, tuple(idn.key(p) for p in r.patterns))
        for r in rules.named
    )
    return group_rules.Rules(named, rules.default_limit)


def _nameservers(control: ControlDir) -> list[tuple[str, int]]:
    return [parse_nameserver(line) for line in control.listing("nameservers")]


def _bindings(control: ControlDir) -> dict[str, source.Binding]:
    return _idn_keys(source.parse_bindings(control.lines("domainbindings") or []))


def _reuse(control: ControlDir) -> Limits:
    return Limits(
        idle=integer(control, "reuseidle"),
        messages=integer(control, "reusemessages"),
        age=integer(control, "reuseage"),
    )


_SIGNER = SignConfig()
"""The signer's own defaults are the signing files' defaults: one copy of each."""
_SIGNER_C = f"{_SIGNER.dkim.header_canon}/{_SIGNER.dkim.body_canon}"


def _file(name: str, kind: str, default: object, readers: tuple[str, ...], what: str,
          setting: str | None = None, parse: Parser | None = None) -> ControlFile:  # fmt: skip
    return ControlFile(name, kind, default, readers, what, setting, parse)


CONTROL_FILES: tuple[ControlFile, ...] = (
    _file("me", "line", None, (REMOTE,), "EHLO name when helohost is missing"),
    _file("helohost", "line", None, (REMOTE,), "EHLO name", "helo", helo_name),
    _file("smtproutes", "map", {}, (REMOTE,), "domain:relay[:port][ credentials]", "routes",
          lambda c: _idn_keys(c.mapping("smtproutes"))),  # fmt: skip
    _file("authsenders", "map", {}, (REMOTE,), "sender:relay[:port][ credentials]", "senders",
          lambda c: _idn_keys(c.mapping("authsenders"))),  # fmt: skip
    _file("smtpauth", "lines", [], (REMOTE,), "relay[:port] user= password= ...", "smtpauth",
          lambda c: smtpauth.parse(c.lines("smtpauth") or [])),  # fmt: skip
    _file("timeoutconnect", "integer", 60, (REMOTE,), "seconds to connect", "timeout_connect",
          _integer("timeoutconnect")),  # fmt: skip
    _file("timeoutremote", "integer", 1200, (REMOTE,), "seconds per read or write",
          "timeout_remote", _integer("timeoutremote")),  # fmt: skip
    _file("moreipme", "list", [], (REMOTE,), "addresses that are also ours", "local",
          local_addresses),  # fmt: skip
    _file("notipme", "list", [], (REMOTE,), "addresses that are not ours (read with moreipme)"),
    _file("nameservers", "list", [], (REMOTE, VERIFY, ROTATE), "DNS servers to ask",
          "nameservers", _nameservers),  # fmt: skip
    _file("dkimcanonicalization", "line", _SIGNER_C, (REMOTE,), "DKIM c=", "signing",
          signing_config),  # fmt: skip
    _file("dkimexpire", "integer", _SIGNER.dkim.expire_after, (REMOTE,),
          "seconds until x=, 0 for none"),  # fmt: skip
    _file("domainkeyscanonicalization", "line", _SIGNER.dk_canon, (REMOTE,),
          "nofws, simple, off"),  # fmt: skip
    _file("unsignable", "line", _SIGNER.unsignable, (REMOTE,), "send or bounce unsignable mail"),
    _file("domainbindings", "lines", [], (REMOTE,), "source address per sender domain",
          "bindings", _bindings),  # fmt: skip
    _file("outgoingip", "line", None, (REMOTE,), "source address otherwise", "outgoing_ip",
          lambda c: source.parse_outgoing_ip(c.line("outgoingip"))),  # fmt: skip
    _file("mxgroups", "lines", [], (REMOTE,), "concurrency caps per MX group", "groups", _groups),
    _file("mxgroupwait", "integer", 60, (REMOTE,), "seconds to wait for a group slot",
          "group_wait", _integer("mxgroupwait")),  # fmt: skip
    _file("shaping.toml", "file", None, (REMOTE,), "message rates and automation (KumoMTA's)",
          "shaping", lambda c: shaping_config.load(c.path)),  # fmt: skip
    _file("shapingwait", "integer", 5, (REMOTE,), "seconds a delivery may wait for its rate",
          "shaping_wait", _integer("shapingwait")),  # fmt: skip
    _file("sharedstate", "line", None, (REMOTE,), "redis:// URL for fleet-wide caps",
          "shared_state", lambda c: (c.line("sharedstate") or "").strip() or None),  # fmt: skip
    _file("sharedlease", "integer", 60, (REMOTE,), "seconds a fleet slot outlives its host",
          "shared_lease", _integer("sharedlease")),  # fmt: skip
    _file("reuseidle", "integer", 5, (REMOTE,), "seconds qremoted keeps an idle connection",
          "reuse", _reuse),  # fmt: skip
    _file("reusemessages", "integer", 100, (REMOTE,), "messages per kept connection"),
    _file("reuseage", "integer", 300, (REMOTE,), "seconds a kept connection may live"),
    _file("tlshosts", "folder", None, (REMOTE,), "<mx>.pem: TLS required and verified",
          "tls_files", lambda c: read_policy_files(c.path)),  # fmt: skip
    _file("notlshosts", "folder", None, (REMOTE,), "MX hosts never to use TLS with"),
    _file("dane", "line", "on", (REMOTE,), "on, off or first: DANE for MX hosts", "dane",
          lambda c: choice(c, "dane", DaneMode)),  # fmt: skip
    _file("mtasts", "line", "on", (REMOTE,), "on or off: MTA-STS for MX delivery", "mta_sts",
          lambda c: choice(c, "mtasts", Switch) is Switch.ON),  # fmt: skip
    _file("utf8headers", "line", "send", (REMOTE,), "non-ASCII headers: send|bounce",
          "utf8_headers", lambda c: choice(c, "utf8headers", HeaderMode)),  # fmt: skip
    _file("tlsrptcontact", "line", None, (REMOTE, "qremote tlsrpt"), "TLS reports' sender",
          "tlsrpt_contact", report_contact),  # fmt: skip
    _file("tlsrptorg", "line", None, ("qremote tlsrpt",), "organization in TLS reports"),
    _file("danecheck", "line", ".", ("qremote check",), "a signed name to test AD on"),
    _file("clientcert.pem", "file", None, (REMOTE,), "client certificate for STARTTLS"),
    _file("tlsclientciphers", "line", None, (REMOTE,), "OpenSSL cipher list"),
    _file("domainkeys", "folder", None, (REMOTE, ROTATE), "signing keys"),
    _file("signonly", "flag", False, (REMOTE,), "sign, then run qmail-remote.orig"),
    _file("authservid", "line", None, (VERIFY, REMOTE), "our Authentication-Results id"),
    _file("arcsign", "lines", [], (REMOTE,), "domains whose forwarded mail is ARC-sealed; *"),
    _file("dkimverifytimeout", "integer", 20, (VERIFY,), "seconds to verify a message"),
    _file("dkimverifypolicy", "lines", [], (VERIFY,), "domain:reject|defer"),
    _file("dkimlength", "line", "pass", (VERIFY,), "pass or policy for unsigned l= text"),
    _file("dkimverifyfallback", "line", "verify", (VERIFY,),
          "verify or pass, when the verifying daemon does not answer"),  # fmt: skip
    _file("dkimrotate", "lines", [], (ROTATE,), "the rotation job's settings"),
    _file("queuelifetime", "integer", 604800, (ROTATE,), "qmail's; sets the grace"),
    _file("metrics", "line", None, ("qremote daemon",),
          "address:port [public] of qremoted's /metrics; none: off"),  # fmt: skip
    _file("verifydmetrics", "line", None, ("qremote verifyd",),
          "address:port [public] of verifyd's /metrics; none: off"),  # fmt: skip
    _file("concurrencyremote", "integer", 20, ("qmail-send", "qremote check"),
          "qmail's deliveries at once; qremoted's descriptor room is checked against it",
          ),  # fmt: skip
)
"""Every control file qremote reads, in the order :func:`load_settings` reads them and
``qremote check`` reports them."""

BY_NAME = {f.name: f for f in CONTROL_FILES}


@dataclass
class Settings:
    """Everything a delivery reads from control files, loaded once by :func:`load_settings`
    (each field's file, default and parser are in :data:`CONTROL_FILES`)."""

    home: str
    control: ControlDir
    helo: str
    routes: dict[str, str]
    senders: dict[str, str]
    """control/authsenders: relays by envelope sender, looked up before smtproutes."""
    smtpauth: AuthTable
    timeout_connect: int
    timeout_remote: int
    local: set[str]
    nameservers: list[tuple[str, int]]
    signing: SignConfig
    bindings: dict[str, source.Binding]
    outgoing_ip: str | None
    groups: group_rules.Rules
    group_wait: int
    shaping: shaping_config.Loaded
    """control/shaping.toml: rates and automation per path (none when unreadable)."""
    shaping_wait: int
    shared_state: str | None
    shared_lease: int
    reuse: Limits
    """Connection reuse; only a long-lived process (qremoted) has a pool to reuse from."""
    tls_files: PolicyFiles
    """What control/tlshosts and control/notlshosts say, read with the rest."""
    dane: DaneMode
    mta_sts: bool
    """control/mtasts: MTA-STS policies are looked up and applied (on, the default)."""
    utf8_headers: HeaderMode
    tlsrpt_contact: str
    """control/tlsrptcontact (default postmaster@ control/me): the sender of our TLS
    reports, whose delivery is not held to DANE or MTA-STS."""


def load_settings(home: str) -> Settings:
    """Read the control files qmail-remote needs, in the table's order; ControlError
    names the first one at fault."""
    control = ControlDir(os.path.join(home, "control"))
    values = {f.setting: f.parse(control) for f in CONTROL_FILES if f.setting and f.parse}
    return Settings(home=home, control=control, **values)


def parse_file(control: ControlDir, name: str) -> object:
    """One file read by its parser (``qremote check``); ControlError when it is wrong."""
    parse = BY_NAME[name].parse
    assert parse is not None, f"control/{name} is read with another file"
    return parse(control)
