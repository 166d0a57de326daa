"""The facts of one delivery as plain data, filled in step by step while it runs.

The delivery steps write what they learn here (the MX group, the host that answered,
the TLS it ran, what was signed, what was waited for); qremoted turns the finished trace
into its JSON record (:mod:`.record`) and its counts (:mod:`.counts`). Nothing here
decides anything: a delivery without a trace (tests, ``check --route``) runs the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# Why a connection was closed: a fixed set, so the label stays bounded.
CLOSED_DONE = "done"
"""QUIT after the delivery: not kept (reuse off, or its limits reached)."""
CLOSED_DROPPED = "dropped"
"""The server dropped it or did not answer in time."""
CLOSED_TLS_FAILED = "tls-failed"
CLOSED_UNUSED = "unused"
"""A kept connection taken for a delivery that went elsewhere, or whose TLS files changed."""
CLOSED_IDLE = "idle"
"""Kept idle: its idle time ran out, the server closed it, or a delivery needed its slot."""
CLOSED_RELOAD = "reload"
"""Kept idle when control/ changed or qremoted stopped."""
CLOSED_REASONS = (
    CLOSED_DONE,
    CLOSED_DROPPED,
    CLOSED_TLS_FAILED,
    CLOSED_UNUSED,
    CLOSED_IDLE,
    CLOSED_RELOAD,
)


@dataclass
class Trace:
    """What one delivery did. Filled by the steps of :mod:`qremote.delivery`."""

    started: float = field(default_factory=time.monotonic)
    group: str = ""
    """The MX group whose slot it held (control/mxgroups' name, or ``mx:<hosts>``)."""
    mx_host: str = ""
    """The last host it talked to (the one whose words are in the report)."""
    mx_ip: str = ""
    tls: str = ""
    """The TLS kind of that conversation (:data:`qremote.tls.policy.KINDS`), empty when
    no host answered."""
    tls_version: str = ""
    reused: bool = False
    """That conversation ran on a kept connection."""
    opened: int = 0
    """Connections opened (a kept connection reused is not one)."""
    connect_failures: int = 0
    tls_failures: list[str] = field(default_factory=list)
    """RFC 8460 result types of the TLS failures met (DANE, MTA-STS, required TLS)."""
    closed: list[str] = field(default_factory=list)
    """Why each connection it ended was closed (CLOSED_*)."""
    signatures: tuple[str, ...] = ()
    """Algorithms of the signatures made (``rsa-sha256``, ``ed25519-sha256``,
    ``domainkeys``; ``arc`` for an ARC set)."""
    unsigned: str = ""
    """Why nothing was signed, when so: ``no-key`` or ``unsignable``."""
    sign_seconds: float = 0.0
    slot: str = ""
    """How it got its MX-group place: ``kept`` (with a kept connection), ``free``,
    ``waited``, ``full`` (gave up), ``off`` (caps unusable, no slot)."""
    slot_seconds: float = 0.0
    shaped: str = ""
    """Deferred at once by shaping: ``rate``, ``suspended``, ``source`` (its address's
    own rate or warm-up) or ``connection`` (the path's connection rate), else empty."""
    tcpto_skips: int = 0
    """Addresses skipped because qmail's tcpto said they were down."""

    def closing(self, reason: str) -> None:
        self.closed.append(reason)
