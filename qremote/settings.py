"""The control files: one table of every file qremote reads, and the settings of a delivery.

:data:`CONTROL_FILES` names each file once, with its default, the programs that read it
and what it means; :func:`load_settings` reads a delivery's files by it, and ``qremote
check`` checks every file in it. qmail's rules apply (``qremote.control``): a missing file
is its default, one that cannot be read or makes no sense is a ``ControlError`` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TypeVar

from qremote.control import ControlDir, ControlError
from qremote.groups import rules as group_rules
from qremote.intl import idn
from qremote.relay import smtpauth
from qremote.relay.smtpauth import AuthTable
from qremote.routing import source
from qremote.routing.addresses import parse_nameserver
from qremote.routing.ipme import local_addresses
from qremote.signing.sign import SignConfig, load_config
from qremote.smtp.pool import Limits
from qremote.tls.policy import PolicyFiles, read_policy_files

V = TypeVar("V")

REMOTE = "qmail-remote"
"""qmail-remote and qremoted: they read the same files."""
VERIFY = "qremote-dkimverify"
ROTATE = "qremote keys rotate"


@dataclass(frozen=True)
class ControlFile:
    name: str
    kind: str
    """line, integer, list, map, lines, flag (exists or not), folder, file."""
    default: object
    readers: tuple[str, ...]
    what: str


CONTROL_FILES: tuple[ControlFile, ...] = (
    ControlFile("me", "line", None, (REMOTE,), "EHLO name when helohost is missing"),
    ControlFile("helohost", "line", None, (REMOTE,), "EHLO name"),
    ControlFile("smtproutes", "map", {}, (REMOTE,), "domain:relay[:port][ credentials]"),
    ControlFile("authsenders", "map", {}, (REMOTE,), "sender:relay[:port][ credentials]"),
    ControlFile("smtpauth", "lines", [], (REMOTE,), "relay[:port] user= password= ..."),
    ControlFile("timeoutconnect", "integer", 60, (REMOTE,), "seconds to connect"),
    ControlFile("timeoutremote", "integer", 1200, (REMOTE,), "seconds per read or write"),
    ControlFile("nameservers", "list", [], (REMOTE, VERIFY, ROTATE), "DNS servers to ask"),
    ControlFile("moreipme", "list", [], (REMOTE,), "addresses that are also ours"),
    ControlFile("notipme", "list", [], (REMOTE,), "addresses that are not ours"),
    ControlFile("domainbindings", "lines", [], (REMOTE,), "source address per sender domain"),
    ControlFile("outgoingip", "line", None, (REMOTE,), "source address otherwise"),
    ControlFile("mxgroups", "lines", [], (REMOTE,), "concurrency caps per MX group"),
    ControlFile("mxgroupwait", "integer", 60, (REMOTE,), "seconds to wait for a group slot"),
    ControlFile("sharedstate", "line", None, (REMOTE,), "redis:// URL for fleet-wide caps"),
    ControlFile("sharedlease", "integer", 60, (REMOTE,), "seconds a fleet slot outlives its host"),
    ControlFile("reuseidle", "integer", 5, (REMOTE,), "seconds qremoted keeps an idle connection"),
    ControlFile("reusemessages", "integer", 100, (REMOTE,), "messages per kept connection"),
    ControlFile("reuseage", "integer", 300, (REMOTE,), "seconds a kept connection may live"),
    ControlFile("notlshosts", "folder", None, (REMOTE,), "MX hosts never to use TLS with"),
    ControlFile("tlshosts", "folder", None, (REMOTE,), "<mx>.pem: TLS required and verified"),
    ControlFile("dane", "line", "on", (REMOTE,), "on, off or first: DANE for MX hosts"),
    ControlFile("utf8headers", "line", "send", (REMOTE,), "non-ASCII headers: send|bounce"),
    ControlFile("mtasts", "line", "on", (REMOTE,), "on or off: MTA-STS for MX delivery"),
    ControlFile("tlsrptorg", "line", None, ("qremote tlsrpt",), "organization in TLS reports"),
    ControlFile("tlsrptcontact", "line", None, (REMOTE, "qremote tlsrpt"), "TLS reports' sender"),
    ControlFile("danecheck", "line", ".", ("qremote check",), "a signed name to test AD on"),
    ControlFile("clientcert.pem", "file", None, (REMOTE,), "client certificate for STARTTLS"),
    ControlFile("tlsclientciphers", "line", None, (REMOTE,), "OpenSSL cipher list"),
    ControlFile("domainkeys", "folder", None, (REMOTE, ROTATE), "signing keys"),
    ControlFile("dkimcanonicalization", "line", "relaxed/relaxed", (REMOTE,), "DKIM c="),
    ControlFile("dkimexpire", "integer", 0, (REMOTE,), "seconds until x=, 0 for none"),
    ControlFile("domainkeyscanonicalization", "line", "nofws", (REMOTE,), "nofws, simple, off"),
    ControlFile("unsignable", "line", "send", (REMOTE,), "send or bounce unsignable mail"),
    ControlFile("signonly", "flag", False, (REMOTE,), "sign, then run qmail-remote.orig"),
    ControlFile("authservid", "line", None, (VERIFY,), "our Authentication-Results id"),
    ControlFile("dkimverifytimeout", "integer", 20, (VERIFY,), "seconds to verify a message"),
    ControlFile("dkimverifypolicy", "lines", [], (VERIFY,), "domain:reject|defer"),
    ControlFile("dkimlength", "line", "pass", (VERIFY,), "pass or policy for unsigned l= text"),
    ControlFile("dkimrotate", "lines", [], (ROTATE,), "the rotation job's settings"),
    ControlFile("queuelifetime", "integer", 604800, (ROTATE,), "qmail's; sets the grace"),
    ControlFile(
        "concurrencyremote", "integer", 20, ("qmail-send", "qremote check"),
        "qmail's deliveries at once; qremoted's descriptor room is checked against it",
    ),
)
"""Every control file qremote reads, in the order ``qremote check`` reports them."""

BY_NAME = {f.name: f for f in CONTROL_FILES}


def integer(control: ControlDir, name: str) -> int:
    """A whole-number file, with its default from the table."""
    entry = BY_NAME[name]
    assert entry.kind == "integer" and isinstance(entry.default, int)
    return control.integer(name, entry.default)


@dataclass
class Settings:
    """Everything a delivery reads from control files, loaded once."""

    home: str
    control: ControlDir
    helo: str
    routes: dict[str, str]
    timeout_connect: int
    timeout_remote: int
    tls_files: PolicyFiles
    """What control/tlshosts and control/notlshosts say, read with the rest."""
    local: set[str] = field(default_factory=set)
    nameservers: list = field(default_factory=list)
    signing: SignConfig = field(default_factory=SignConfig)
    bindings: dict = field(default_factory=dict)
    outgoing_ip: str | None = None
    groups: group_rules.Rules = field(default_factory=group_rules.Rules)
    group_wait: int = 60
    shared_state: str | None = None
    shared_lease: int = 60
    senders: dict[str, str] = field(default_factory=dict)
    """control/authsenders: relays by envelope sender, looked up before smtproutes."""
    smtpauth: AuthTable = field(default_factory=lambda: AuthTable({}))
    tlsrpt_contact: str = ""
    """control/tlsrptcontact (default postmaster@ control/me): the sender of our TLS
    reports, whose delivery is not held to DANE or MTA-STS."""
    utf8_headers: str = "send"
    """control/utf8headers: what header fields that are not ASCII do at a server without
    SMTPUTF8: ``send`` (the default: as qmail and Postfix send them, with a note) or
    ``bounce`` (RFC 6531's rule: the next MX, D when none offers it)."""
    mta_sts: bool = True
    """control/mtasts: MTA-STS policies are looked up and applied (on, the default)."""
    dane: str = "on"
    """control/dane: on (the default; believed only from a resolver on loopback), off, or
    first (DANE even where tlshosts/<mx>.pem exists)."""
    reuse: Limits = field(default_factory=Limits)
    """Connection reuse; only a long-lived process (qremoted) has a pool to reuse from."""


def load_settings(home: str) -> Settings:
    """Read the control files qmail-remote needs; ControlError names the one at fault."""
    control = ControlDir(os.path.join(home, "control"))
    helo, where = control.line("helohost"), "control/helohost"
    if helo is None:
        helo, where = control.line("me"), "control/me"
    if helo is None:
        raise ControlError("control/me and control/helohost are both missing")
    if not helo:
        raise ControlError("control/helohost (or control/me) is empty")
    if not helo.isascii() or not helo.isprintable():
        raise ControlError(f"{where}: {helo!r} is not a host name (not printable ASCII)")
    return Settings(
        home=home,
        control=control,
        helo=helo,
        routes=_idn_keys(control.mapping("smtproutes")),
        senders=_idn_keys(control.mapping("authsenders")),
        smtpauth=smtpauth.parse(control.lines("smtpauth") or []),
        timeout_connect=integer(control, "timeoutconnect"),
        timeout_remote=integer(control, "timeoutremote"),
        local=local_addresses(control),
        nameservers=[parse_nameserver(line) for line in control.listing("nameservers")],
        signing=load_config(control),
        bindings=_idn_keys(source.parse_bindings(control.lines("domainbindings") or [])),
        outgoing_ip=source.parse_outgoing_ip(control.line("outgoingip")),
        groups=_idn_groups(group_rules.parse(control.lines("mxgroups") or [])[0]),
        group_wait=integer(control, "mxgroupwait"),
        shared_state=(control.line("sharedstate") or "").strip() or None,
        shared_lease=integer(control, "sharedlease"),
        reuse=Limits(
            idle=integer(control, "reuseidle"),
            messages=integer(control, "reusemessages"),
            age=integer(control, "reuseage"),
        ),
        tls_files=read_policy_files(control.path),
        dane=dane_mode(control),
        mta_sts=_switch(control, "mtasts"),
        utf8_headers=_utf8_headers(control),
        tlsrpt_contact=report_contact(control),
    )


def _idn_keys(table: dict[str, V]) -> dict[str, V]:
    """Keys in the form lookups use: a domain written as an IDN (U-labels) matches its
    A-label form, which is how every delivery looks it up."""
    return {idn.key(k): v for k, v in table.items()}


def _idn_groups(rules: group_rules.Rules) -> group_rules.Rules:
    named = tuple(
        group_rules.Rule(r.name, r.limit, tuple(idn.key(p) for p in r.patterns))
        for r in rules.named
    )
    return group_rules.Rules(named, rules.default_limit)


def report_contact(control: ControlDir) -> str:
    """The sender of our TLS reports: control/tlsrptcontact, else postmaster@ control/me."""
    said = (control.line("tlsrptcontact") or "").strip()
    return said or f"postmaster@{(control.line('me') or 'localhost').strip()}"


def utf8_headers_mode(control: ControlDir) -> str:
    """control/utf8headers: send (the default) or bounce; ControlError for anything else."""
    return _utf8_headers(control)


def switch(control: ControlDir, name: str) -> bool:
    """An on/off file (control/mtasts); ControlError for anything else."""
    return _switch(control, name)


def _utf8_headers(control: ControlDir) -> str:
    value = (control.line("utf8headers") or "send").strip().lower()
    if value not in ("bounce", "send"):
        raise ControlError(f"control/utf8headers: {value[:40]!r} is not bounce or send")
    return value


def _switch(control: ControlDir, name: str) -> bool:
    value = (control.line(name) or "on").strip().lower()
    if value not in ("on", "off"):
        raise ControlError(f"control/{name}: {value[:40]!r} is not on or off")
    return value == "on"


def dane_mode(control: ControlDir) -> str:
    """control/dane: on (the default), off or first; ControlError for anything else."""
    value = (control.line("dane") or "on").strip().lower()
    if value not in ("on", "off", "first"):
        raise ControlError(f"control/dane: {value[:40]!r} is not on, off or first")
    return value


