"""Step 5 of a delivery: the connection loop. It asks the :mod:`.attempt` rules what to
do, does the I/O (tcpto, connect, the SMTP session, the pool) and tells them what
happened; it decides nothing itself.

:class:`Connections` owns, for one delivery, its MX-group slot (handed to the pool with
a kept connection, else let go when the delivery ends) and the idle connection taken
from the pool for it (ended if it was never used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from qremote import report
from qremote.control import ControlError
from qremote.delivery import shape
from qremote.delivery.attempt import (
    SUCCESS,
    Answer,
    Attempt,
    Command,
    Connect,
    Conversed,
    Finish,
    Kept,
    NextAddress,
    Tls,
    Walk,
)
from qremote.delivery.context import Delivery
from qremote.delivery.outcome import Outcome, with_notes
from qremote.delivery.tlsplan import (
    Plan,
    TlsaLookupFailed,
    key_for,
    plan_for,
    policy_for,
    unverified,
)
from qremote.groups import caps
from qremote.metrics import trace as closing
from qremote.routing.mx import Target
from qremote.smtp import pool
from qremote.smtp.conversation import (
    Account,
    Action,
    Conversation,
    NextHost,
    RecipientReport,
    Setup,
    State,
)
from qremote.smtp.session import (
    ConnectFailed,
    Dropped,
    Session,
    TlsFailed,
    TlsSetup,
    connect,
    dropped_report,
)
from qremote.tls.policy import kind_of
from qremote.tlsrpt.watch import Watch


@dataclass(frozen=True)
class _Ride:
    """The current connection to an address: its session, the TLS it was opened with,
    and (for the pool) when it was opened and how many messages it carried before."""

    session: Session
    tls: TlsSetup | None
    born: float
    carried: int


class Connections:
    """The addresses of one delivery, tried in order until one gives an answer."""

    def __init__(self, delivery: Delivery, hold: caps.Hold, kept: pool.Kept | None) -> None:
        self.delivery = delivery
        self.hold = hold
        """The MX-group slot, and who owns it now: the delivery, or (handed on) the
        pool's kept connection."""
        self.kept = kept
        """The idle connection taken from the pool for this delivery, not yet used."""

    async def run(self) -> Outcome:
        """Try the addresses in order, as qmail does; a kept connection's address goes
        first (it is one of those qmail picks from at random among the lowest preference
        anyway). An unused kept connection is ended."""
        try:
            return await self._walk()
        finally:
            if self.kept is not None:
                kept, self.kept = self.kept, None
                self.delivery.trace.closing(closing.CLOSED_UNUSED)
                await kept.session.quit()

    async def _walk(self) -> Outcome:
        ctx = self.delivery
        route = ctx.route
        origin = route.origin
        served = frozenset(t.ip for t in route.targets if origin.serves(t.ip))
        walk = Walk(route.targets, served, self.kept.key.ip if self.kept is not None else None)
        for target in walk.order():
            live = self.kept is not None and self.kept.key.ip == target.ip
            if not live and await ctx.tcpto.skip(target.ip):
                ctx.trace.tcpto_skips += 1
                continue
            result = await self._address(target)
            if isinstance(result, Outcome):
                return result
            if result is not None:
                walk.refused(result)
        note = report.note_no_family(route.domain, str(origin.ip), origin.where)
        text, notes = walk.final(note)
        return Outcome.final(with_notes(text, notes))

    async def _address(self, target: Target) -> Outcome | NextHost | None:
        """One address: an Outcome ends the delivery; NextHost (what it said) or None
        (unreachable) moves on."""
        ctx = self.delivery
        notes = ctx.notes.copy()
        try:
            policy = policy_for(ctx.settings, ctx.route, target)
            watch = ctx.watch(policy, target)
            plan = plan_for(ctx.settings, target, policy)
        except ControlError as e:
            return Outcome.final(report.control_error(str(e)))
        except TlsaLookupFailed as e:
            refused = _told(watch, Attempt.unusable(e.report, notes))
            assert isinstance(refused, NextAddress)  # never tried, never without TLS
            return refused.refusal
        sts_id = ctx.route.sts.policy_id if ctx.route.sts is not None else None
        kept, self.kept = self.kept, None
        fit = self._fit(kept, target, plan.setup)
        attempt = Attempt(target.ip, plan.facts(sts_id), notes, fit, kept.messages if kept else 0)
        return await self._converse(target, plan, attempt, watch, kept)

    def _fit(self, kept: pool.Kept | None, target: Target, tls: TlsSetup | None) -> Kept:
        if kept is None:
            return Kept.NONE
        route = self.delivery.route
        if kept.key == key_for(route, target, tls):
            return Kept.FITS
        if kept.key == key_for(route, target, None):
            return Kept.FITS_PLAIN
        return Kept.STALE_SETUP

    async def _converse(
        self, target: Target, plan: Plan, attempt: Attempt, watch: Watch, kept: pool.Kept | None
    ) -> Outcome | NextHost | None:
        """Connection after connection to one address, as the attempt commands."""
        ctx = self.delivery
        answer = attempt.start()
        ride: _Ride | None = None
        while True:
            command = _told(watch, answer)
            if isinstance(command, NextAddress):
                return command.refusal
            if isinstance(command, Finish):
                if ride is None:  # decided before any connection: TLS cannot be set up
                    self.kept = kept  # unused: ended with the delivery
                    return Outcome.final(command.text)
                return await self._finish(command, ride, target)
            if isinstance(command, Connect):
                if kept is not None and command.drop_kept:
                    ctx.trace.closing(closing.CLOSED_UNUSED)
                    await kept.session.quit()  # the TLS files changed since it was opened
                kept = None
                refused = await self._turn()
                if refused is not None:
                    return Outcome.final(refused)
                tls = _tls(command.tls, plan, ctx, target)
                session = await self._open(target, tls, watch)
                if session is None:
                    answer = attempt.unreachable()
                    continue
                ride, start = _Ride(session, tls, time.monotonic(), 0), None
            else:  # Reuse
                assert kept is not None
                tls = plan.setup if attempt.now is Tls.PLANNED else None
                ride = _Ride(kept.session, tls, kept.born, kept.messages)
                start = ride.session.next_message(ctx.envelope, ctx.body)
            answer = await _run(ride.session, start, attempt, ctx)
            trace = ctx.trace
            trace.mx_host, trace.mx_ip, trace.reused = target.name, target.ip, ride.carried > 0
            secured = ride.session.conv.tls
            trace.tls = kind_of(plan.policy, secured, ride.tls is plan.setup)
            trace.tls_version = ride.session.tls_version if secured else ""

    async def _turn(self) -> bytes | None:
        """The path's connection rate (control/shaping.toml): None when a new connection
        may open (its turn waited for), else the ``Z`` that ends the delivery."""
        ctx = self.delivery
        if ctx.shaped is None:
            return None
        return await shape.connection_turn(
            ctx.settings, ctx.resources, ctx.shaped, ctx.notes, ctx.trace
        )

    async def _open(self, target: Target, tls: TlsSetup | None, watch: Watch) -> Session | None:
        """A new connection and conversation to ``target``; None when it cannot be reached."""
        ctx = self.delivery
        settings, port = ctx.settings, ctx.route.port
        ctx.say(f"connecting to {target.ip} port {port} ({target.name})")
        try:
            reader, writer = await connect(
                target.ip, port, settings.timeout_connect, ctx.route.origin.ip
            )
        except ConnectFailed as e:
            ctx.trace.connect_failures += 1
            await ctx.tcpto.record(target.ip, e.timed_out)
            ctx.say(f"cannot connect to {target.ip}: {e}")
            return None
        await ctx.tcpto.record(target.ip, False)
        ctx.trace.opened += 1
        if not watch.sending_ip:  # the address the system chose, for the TLS report
            local = writer.get_extra_info("sockname")
            watch.sending_ip = str(local[0]) if local else ""
        relay = ctx.route.relay
        login = None
        if relay is not None and relay.credentials is not None:
            login = Account(relay.credentials, relay.mechanism, relay.where)
        pool_ = ctx.resources.pool
        setup = Setup(
            want_tls=tls is not None,
            require_tls=tls is not None and tls.required,
            keep_open=pool_ is not None and pool_.limits.idle > 0,
            login=login,
            route=relay.where if relay is not None else None,
            probe=ctx.caller.probe is not None,
        )
        conv = Conversation(target.ip, ctx.envelope, setup)
        session = Session(reader, writer, conv, ctx.body, settings.timeout_remote, tls)
        probe = ctx.caller.probe
        session.progress = probe.progress if probe is not None else None
        return session

    async def _finish(self, finish: Finish, ride: _Ride, target: Target) -> Outcome:
        session = ride.session
        recipients = _in_order(session.recipients) if finish.recipients else []
        if finish.keep:
            # Kept under what it is: a connection that fell back to plain text (or to
            # unverified TLS) must not be taken for one with the TLS it was opened for.
            key = key_for(self.delivery.route, target, ride.tls if session.conv.tls else None)
            await self._keep_or_quit(key, session, ride.born, ride.carried + 1)
        return Outcome(recipients, finish.text)

    async def _keep_or_quit(
        self, key: pool.Key, session: Session, born: float, carried: int
    ) -> None:
        """Hand the connection and its MX-group slot to the pool, or end it (also when
        it carried as many messages as its path allows)."""
        pool_ = self.delivery.resources.pool
        shaped = self.delivery.shaped
        limit = shaped.per_connection if shaped is not None else None
        allowed = limit is None or carried < limit
        if pool_ is not None and self.hold.slot is not None and allowed:
            kept = pool.Kept(key, session, self.hold.slot, self.delivery.group, born, carried)
            if pool_.checkin(kept):
                self.hold.hand_on()
                return
        self.delivery.trace.closing(closing.CLOSED_DONE)
        await session.quit()


def _tls(which: Tls, plan: Plan, ctx: Delivery, target: Target) -> TlsSetup | None:
    if which is Tls.PLANNED:
        return plan.setup
    if which is Tls.UNVERIFIED:
        return unverified(ctx.settings, target)
    return None


async def _run(
    session: Session, start: list[Action] | None, attempt: Attempt, ctx: Delivery
) -> Answer:
    """One conversation on ``session``, told to the attempt; the session is closed unless
    the attempt keeps it."""
    conv = session.conv
    session.before_dot = ctx.caller.before_dot
    try:
        result = await session.run(start)
    except Dropped:
        ctx.trace.closing(closing.CLOSED_DROPPED)
        await session.close()
        return attempt.dropped(conv.state is State.RSET, dropped_report(conv))
    except TlsFailed as e:
        ctx.trace.closing(closing.CLOSED_TLS_FAILED)
        await session.close()
        return attempt.tls_failed(str(e))
    except BaseException:
        session.abort()  # cancelled (qremoted stopping) or a bug: never leave it open
        raise
    said = Conversed(
        result.final, result.tls_info, result.auth_info, conv.raw_headers, conv.eight_bit_unasked
    )
    answer = attempt.conversed(said)
    if not (isinstance(answer.command, Finish) and answer.command.keep):
        ctx.trace.closing(closing.CLOSED_DONE)
        await session.close()
    return answer


def _told(watch: Watch, answer: Answer) -> Command:
    """The TLS-report verdict goes to the watch; the command back to the loop."""
    if answer.verdict == SUCCESS:
        watch.success()
    elif answer.verdict is not None:
        watch.failure(answer.verdict)
    return answer.command


def _in_order(reports: list[RecipientReport]) -> list[bytes]:
    """Recipient reports in the envelope's order, as qmail-rspawn reads them (a recipient
    refused before its RCPT, for SMTPUTF8, is reported before those asked about)."""
    return [r.report for r in sorted(reports, key=lambda r: r.index)]
