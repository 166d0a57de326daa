"""What every connection of one delivery shares, built once and never changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qremote.delivery.outcome import Notes
from qremote.delivery.resources import Resources
from qremote.delivery.route import Route
from qremote.delivery.shape import Shaped
from qremote.metrics.trace import Trace
from qremote.routing.mx import Target
from qremote.settings import Settings
from qremote.smtp.body import Body
from qremote.smtp.conversation import Envelope
from qremote.smtp.session import BeforeDot
from qremote.tcpto.store import Tcpto
from qremote.tls.policy import Policy
from qremote.tlsrpt.watch import Watch, held_by


@dataclass(frozen=True)
class Probe:
    """``qremote check --route``: go as far as the envelope and send nothing; ``progress``
    is told each step as it is reached."""

    progress: Callable[[str], None] | None = None

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)


@dataclass(frozen=True)
class Caller:
    """Who a delivery runs for, besides the message: qremoted's commit with its client
    before each final dot (None standalone), or ``qremote check --route``'s probe."""

    before_dot: BeforeDot | None = None
    probe: Probe | None = None
    """Set for ``qremote check --route``: stop before MAIL."""


@dataclass(frozen=True)
class Delivery:
    """One delivery, from its MX-group slot on."""

    settings: Settings
    route: Route
    envelope: Envelope
    body: Body
    group: str
    """The MX group (control/mxgroups) whose slot the delivery holds."""
    notes: Notes
    """Lines for every report from a remote host: what was signed, cap fallbacks."""
    tcpto: Tcpto
    """qmail's do-not-try list (the fleet's too when Redis answered for the slot)."""
    resources: Resources
    caller: Caller
    trace: Trace
    """What the delivery did, for qremoted's record and counts."""
    shaped: Shaped | None = None
    """Its shaping path and source (control/shaping.toml): the connections' limits."""

    def watch(self, policy: Policy, target: Target) -> Watch:
        """Where this connection's TLS outcome goes (TLS report, status counts)."""
        found = self.route.sts
        sts = found.policy if found is not None else None
        lines, mx = (tuple(sts.lines()), sts.mx) if sts is not None else ((), ())
        held = held_by(policy, self.route.domain, lines, mx)
        ip = self.route.origin.ip or ""
        tally = self.resources.tally
        # Failures are counted where TLS was to be authenticated (tlshosts, DANE, MTA-STS):
        # an opportunistic host without STARTTLS has failed nothing.
        trace = self.trace if policy.verified or policy.dane is not None else None
        return Watch(self.settings.home, held, self.group, tally, ip, target.name, target.ip, trace)

    def say(self, text: str) -> None:
        """A step reached, for ``qremote check --route``."""
        if self.caller.probe is not None:
            self.caller.probe.say(text)
