"""Which TLS to use with one MX host: a pure decision over what the policy files say.

- ``control/notlshosts/<mx>`` exists: plain text, never STARTTLS.
- ``control/tlshosts/<mx>.pem`` exists: STARTTLS is required and the certificate must
  verify against that CA file and match the MX name; any failure is temporary (``Z``).
- ``control/tlshosts/exhaustivelist`` exists: hosts without a pem file get plain text.
- otherwise opportunistic: STARTTLS when offered, the certificate is not checked, and a
  failed handshake is retried once in plain text on a new connection.

DANE (RFC 7672): an MX host with secure TLSA records gets TLS required and authenticated
by them (:mod:`qremote.dane`), after ``notlshosts/<mx>`` (plain text, DANE not applied) and
``tlshosts/<mx>.pem`` (which wins unless ``control/dane`` says ``first``), before
``exhaustivelist``. A failed TLSA lookup makes the host unusable for now.

MTA-STS (RFC 8461) comes after DANE (which takes precedence, section 2) and the files:
``enforce`` requires TLS verified against the system's CAs and the MX name; ``testing``
verifies too, but a failure only means another connection with TLS unverified (and a
line in the TLS report).

A relay that needs TLS (it has credentials for SMTP AUTH, or speaks implicit TLS) is a
known host, unlike an MX: TLS is required and its certificate is verified against the
system's CAs and the relay's name (or address) unless ``tlshosts/<relay>.pem`` names the
CA to use or its route says ``verify=no``; ``notlshosts/<relay>`` contradicts the route
and is an error (the password is never sent in clear).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

from qremote.control import ControlError, shown
from qremote.dane.tlsa import Dane


class Mode(Enum):
    PLAIN = "plain"
    OPPORTUNISTIC = "opportunistic"
    REQUIRED = "required"


@dataclass(frozen=True)
class Policy:
    mode: Mode
    ca_file: str | None = None
    """Verify the certificate against this CA file (and the host's name)."""
    system: bool = False
    """Verify it against the system's CAs (OpenSSL's default paths) and the name."""
    implicit: bool = False
    """TLS from the first byte (RFC 8314), not STARTTLS."""
    dane: Dane | None = None
    """Authenticate by these TLSA records (no records: TLS without authentication)."""
    failure: str | None = None
    """This host must not be used now (its TLSA lookup failed); the text says why."""
    sts: str | None = None
    """The MTA-STS mode this host is held to (enforce or testing), if that decided."""

    @property
    def verified(self) -> bool:
        return self.ca_file is not None or self.system or bool(self.dane and self.dane.records)


KINDS = ("none", "opportunistic", "verified", "dane", "mta-sts", "mta-sts-testing")
"""The TLS a conversation ran, as counted (``qremote_tls_sessions_total``'s ``kind``)."""


def kind_of(policy: Policy, tls: bool, planned: bool) -> str:
    """Which of :data:`KINDS` a conversation ran: ``tls`` whether TLS was set up,
    ``planned`` whether with the policy's own set-up (not a fallback to unverified TLS)."""
    if not tls:
        return "none"
    if policy.sts == "testing":
        return "mta-sts-testing"
    if not planned:
        return "opportunistic"
    if policy.dane is not None and policy.dane.records:
        return "dane"
    if policy.sts == "enforce":
        return "mta-sts"
    if policy.ca_file is not None or policy.system:
        return "verified"
    return "opportunistic"


@dataclass(frozen=True)
class RelayTls:
    """What a relay's route asks of TLS (see :mod:`qremote.relay.plan`)."""

    where: str
    """The route's line, for messages."""
    implicit: bool
    verify: bool


def _safe_name(mx: str) -> str | None:
    """An MX name usable as a file name; None for anything that could escape the folder."""
    name = mx.lower().rstrip(".")
    if not name or "/" in name or name.startswith(".") or "\0" in name:
        return None
    return name


@dataclass(frozen=True)
class PolicyFiles:
    """What ``control/`` says about TLS, read once (per delivery standalone, per settings
    generation in qremoted, which rereads when a file is added to or removed from these
    folders: that changes the folder, which its change check watches).

    The precedence, strongest first: ``notlshosts/<mx>`` (plain text), then
    ``tlshosts/<mx>.pem`` (required and verified), then ``tlshosts/exhaustivelist``
    (plain text for hosts without a pem file), then opportunistic; a relay that needs
    TLS, DANE and MTA-STS take their rows in :func:`decide` (see the module's docstring).
    """

    control: str
    plain: frozenset[str] = frozenset()
    """MX names with a ``notlshosts/`` file."""
    pinned: frozenset[str] = frozenset()
    """MX names with a ``tlshosts/<name>.pem`` file."""
    exhaustive: bool = False
    problem: str | None = None
    """A policy folder that exists but cannot be read: every decision is then an error
    (an unreadable tlshosts/ must never quietly turn required TLS into opportunistic)."""


def _names(folder: str) -> tuple[list[str], str | None]:
    """The entries of a folder ([] when it does not exist), or the error that hid them."""
    try:
        return os.listdir(folder), None
    except (FileNotFoundError, NotADirectoryError):
        return [], None
    except OSError as e:
        return [], f"{shown(folder, 2)}: {e.strerror}"


def read_policy_files(control_path: str) -> PolicyFiles:
    plain, problem_plain = _names(os.path.join(control_path, "notlshosts"))
    pinned, problem_pinned = _names(os.path.join(control_path, "tlshosts"))
    return PolicyFiles(
        control_path,
        frozenset(plain),
        frozenset(name[:-4] for name in pinned if name.endswith(".pem")),
        "exhaustivelist" in pinned,
        problem_plain or problem_pinned,
    )


def decide(
    files: PolicyFiles,
    mx: str,
    relay: RelayTls | None = None,
    dane: Dane | None = None,
    dane_first: bool = False,
    sts: str | None = None,
) -> Policy:
    """The policy for one MX host (or relay needing TLS), from the files as read;
    ControlError when they could not be read or contradict the route. Pure: no file is
    looked at here."""
    if files.problem is not None:
        raise ControlError(files.problem)
    name = _safe_name(mx)
    if relay is not None:
        return _relay(files, name, relay)
    if name is None:
        return Policy(Mode.OPPORTUNISTIC)
    if name in files.plain:
        return Policy(Mode.PLAIN)
    if dane is not None and (dane_first or name not in files.pinned):
        if dane.failure is not None:
            return Policy(Mode.REQUIRED, dane=dane, failure=dane.failure)
        return Policy(Mode.REQUIRED, dane=dane)
    if name in files.pinned:
        return Policy(Mode.REQUIRED, os.path.join(files.control, "tlshosts", name + ".pem"))
    if sts == "enforce":
        return Policy(Mode.REQUIRED, system=True, sts=sts)
    if sts == "testing":
        return Policy(Mode.OPPORTUNISTIC, system=True, sts=sts)
    if files.exhaustive:
        return Policy(Mode.PLAIN)
    return Policy(Mode.OPPORTUNISTIC)


def _relay(files: PolicyFiles, name: str | None, relay: RelayTls) -> Policy:
    if name is not None and name in files.plain:
        raise ControlError(
            f"control/notlshosts/{name} forbids TLS, but {relay.where} needs it "
            "(credentials are only ever sent inside TLS)"
        )
    if not relay.verify:
        return Policy(Mode.REQUIRED, implicit=relay.implicit)
    if name is not None and name in files.pinned:
        ca_file = os.path.join(files.control, "tlshosts", name + ".pem")
        return Policy(Mode.REQUIRED, ca_file, implicit=relay.implicit)
    return Policy(Mode.REQUIRED, system=True, implicit=relay.implicit)
