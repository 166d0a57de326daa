"""The TLS of one address: its policy (:func:`qremote.tls.policy.decide` over what the
route knows), the set-up a connection runs, and the key its connection is kept under.

The rules of what to do when TLS fails are not here but in :mod:`.attempt`; this module
only turns the policy files, DANE, MTA-STS and the relay's needs into objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from qremote import report
from qremote.control import ControlError
from qremote.delivery.attempt import TlsFacts
from qremote.delivery.route import Route
from qremote.routing.mx import Target
from qremote.settings import DaneMode, Settings
from qremote.smtp.pool import Key
from qremote.smtp.session import TlsSetup
from qremote.tls import contexts
from qremote.tls.policy import Mode, Policy, decide


class TlsaLookupFailed(Exception):
    """This address must not be tried now (its TLSA lookup failed); the report says why."""

    def __init__(self, text: bytes) -> None:
        super().__init__()
        self.report = text


def policy_for(settings: Settings, route: Route, target: Target) -> Policy:
    """The TLS policy for ``target``; ControlError when the files cannot be read."""
    relay_tls = route.relay.tls if route.relay is not None else None
    first = settings.dane is DaneMode.FIRST
    sts = route.sts.policy.mode if route.sts is not None and route.sts.policy is not None else None
    return decide(settings.tls_files, target.name, relay_tls, target.dane, first, sts)


@dataclass(frozen=True)
class Plan:
    """One address's TLS: the policy, the set-up a new connection runs (None: plain
    text), and why TLS could not be set up when the policy asked for it (what that means
    is :mod:`.attempt`'s to decide)."""

    policy: Policy
    setup: TlsSetup | None
    unavailable: str | None = None

    def facts(self, sts_id: str | None) -> TlsFacts:
        """As plain data for the attempt; ``sts_id``: the MTA-STS policy's id, if any."""
        setup, policy = self.setup, self.policy
        return TlsFacts(
            planned=setup is not None,
            required=policy.mode is Mode.REQUIRED,
            verifying=setup is not None and bool(setup.context.verify_mode),
            dane=policy.dane is not None,
            authenticated=policy.verified or policy.dane is not None,
            sts=policy.sts,
            sts_id=sts_id if policy.sts is not None else None,
            unavailable=self.unavailable,
        )


def plan_for(settings: Settings, target: Target, policy: Policy) -> Plan:
    """How to run TLS with ``target``; TlsaLookupFailed when DANE holds the host and its
    TLSA lookup failed."""
    if policy.failure is not None:
        raise TlsaLookupFailed(report.dane_unusable(target.name, target.ip, policy.failure))
    if policy.mode is Mode.PLAIN:
        return Plan(policy, None)
    try:
        ctx = contexts.context_for(settings.control.path, policy)
    except ControlError as e:
        return Plan(policy, None, str(e))
    required = policy.mode is Mode.REQUIRED
    return Plan(policy, TlsSetup(ctx, target.name, required, policy.implicit, policy.dane))


def unverified(settings: Settings, target: Target) -> TlsSetup | None:
    """TLS without checking the certificate (MTA-STS testing, after a failure)."""
    return plan_for(settings, target, Policy(Mode.OPPORTUNISTIC)).setup


def key_for(route: Route, target: Target, tls: TlsSetup | None) -> Key:
    """What a connection to ``target`` with ``tls`` is kept under in the pool."""
    wanted = (tls.server_name, tls.required, id(tls.context)) if tls is not None else None
    account = route.relay.identity() if route.relay is not None else None
    origin = route.origin
    return Key(target.ip, route.port, origin.ip, origin.helo, wanted, account)


def reuse_keys(settings: Settings, route: Route) -> list[Key]:
    """Keys of idle connections this delivery may use: to the addresses qmail would
    try first (the lowest preference), set up as a new connection would be."""
    keys = []
    chosen = route.targets
    for target in chosen:
        if target.pref != chosen[0].pref or not route.origin.serves(target.ip):
            continue
        try:
            plan = plan_for(settings, target, policy_for(settings, route, target))
        except (ControlError, TlsaLookupFailed):
            continue
        if plan.unavailable is not None and plan.policy.mode is Mode.REQUIRED:
            continue  # the delivery ends before any connection (see attempt.py)
        tls = plan.setup
        keys.append(key_for(route, target, tls))
        if tls is not None and not tls.required:
            # Opportunistic: a connection kept as plain text (no STARTTLS offered, or a
            # failed handshake) is what a new one may well end up as; it is taken as
            # what it is, plain, never as one with TLS.
            keys.append(key_for(route, target, None))
    return keys
