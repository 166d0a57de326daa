"""The delivery core: one async function from (host, sender, recipients, message) to reports.

It is the pipeline of docs/DESIGN.md section 3: check the message, resolve the route, then for
each address in order skip it if tcpto says so, connect, and hold the SMTP conversation.
It keeps no global state, so a daemon can run many of these at once. What it reads
from control/ comes in a :class:`~qremote.settings.Settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qremote import report
from qremote.attempts import Event, HostAttempt, Next, Refusal, Walk
from qremote.control import ControlError
from qremote.groups import caps
from qremote.groups import rules as group_rules
from qremote.intl.idn import IdnError, ascii_domain
from qremote.mtasts import discover
from qremote.mtasts.apply import enforce_mx
from qremote.mtasts.discover import Found
from qremote.mtasts.store import PolicyStore
from qremote.relay.plan import Relaying, plan
from qremote.routing import routes, source
from qremote.routing.addresses import ip_literal
from qremote.routing.dnserrors import DnsHard, DnsSoft, NullMx
from qremote.routing.mx import Target, usable
from qremote.settings import Settings, load_settings
from qremote.signing.sign import SigningError, Unsignable, sign_message, store_for
from qremote.smtp import addresses
from qremote.smtp.body import Body, has_partial_final_line, header_block, is_eight_bit
from qremote.smtp.conversation import (
    Conversation,
    Envelope,
    Finished,
    Login,
    NextHost,
    RecipientReport,
    Stale,
    State,
)
from qremote.smtp.pool import ConnectionPool, Kept, Key
from qremote.smtp.session import (
    BeforeDot,
    ConnectFailed,
    Dropped,
    Session,
    TlsFailed,
    TlsSetup,
    connect,
    dropped_report,
)
from qremote.tcpto.shared import SharedTcpto
from qremote.tcpto.store import Tcpto, TcptoFiles
from qremote.tls import contexts
from qremote.tls.policy import Mode, Policy, decide
from qremote.tls.tally import Tally
from qremote.tlsrpt.record import result_type
from qremote.tlsrpt.report import is_tls_report
from qremote.tlsrpt.watch import Watch, held_by

__all__ = ["Outcome", "Resources", "Settings", "deliver", "load_settings"]

if TYPE_CHECKING:  # dnspython is imported only when a name must be looked up
    from dns.asyncresolver import Resolver as AsyncResolver


@dataclass
class Resources:
    """What a long-lived process (qremoted) keeps between deliveries; a standalone
    qmail-remote has none and makes what it needs per delivery."""

    resolver: AsyncResolver | None = None
    """A dnspython resolver with a cache that honours TTLs."""
    shared: caps.SharedState | None = None
    """The Redis backend for ``control/sharedstate``; its owner closes it."""
    pool: ConnectionPool | None = None
    """Idle SMTP connections (connection reuse)."""
    tally: Tally | None = None
    """Authenticated-TLS outcomes per MX group (``qremote status``)."""
    sts: PolicyStore | None = None
    """MTA-STS policies remembered in memory (and on disk)."""


@dataclass
class Outcome:
    """The reports of one delivery, each without its terminating NUL."""

    recipients: list[bytes]
    message: bytes

    def wire(self) -> bytes:
        """What qmail-remote writes: every report followed by a NUL."""
        return b"".join(r + b"\0" for r in [*self.recipients, self.message])


def _final(text: bytes) -> Outcome:
    return Outcome([], text)


def _with_notes(text: bytes, notes: list[str]) -> bytes:
    """Extra lines for the qmail-send log (TLS, fallbacks) after the server's text."""
    if not notes:
        return text
    if text and not text.endswith(b"\n"):
        text += b"\n"
    return text + "".join(n + "\n" for n in notes).encode()


@dataclass(frozen=True)
class _Way:
    """Where a delivery goes: the addresses, the port, and the relay if a route chose it."""

    targets: list[Target]
    port: int
    relay: Relaying | None
    """How to talk to the relay (AUTH, its TLS); None for MX delivery."""
    sts: Found | None = None
    """The domain's MTA-STS policy lookup (MX delivery with MTA-STS on)."""


async def _targets(
    settings: Settings,
    resolver: AsyncResolver | None,
    host: str,
    sender: bytes,
    store: PolicyStore | None,
    dane_allowed: bool = True,
) -> _Way:
    """The addresses to try, by authsenders, smtproutes, or MX.

    dnspython is imported only when a name must be looked up: deliveries to an address
    literal or to a relay given as an IP address start faster without it.
    """
    who = sender.decode("utf-8", "surrogateescape")
    route = routes.route_for(host, settings.routes, who, settings.senders)
    relay = plan(route, settings.smtpauth) if route is not None else None
    name = route.relay if route is not None else host
    port = route.port if route is not None else routes.DEFAULT_PORT
    ip = ip_literal(name) if route is not None or name.startswith("[") else None
    if ip is not None:
        return _Way([Target(ip, 0, name)], port, relay)
    from qremote.routing import resolve

    if resolver is None:
        resolver = resolve.make_resolver(
            settings.nameservers, settings.timeout_connect, settings.timeout_remote
        )
    if route is not None:
        return _Way(await resolve.relay_targets(resolver, route.relay), port, relay)
    dane = dane_allowed and settings.dane != "off" and resolve.on_loopback(resolver)
    mx = resolve.mx_targets(resolver, host, random.Random(), dane)
    if store is None:
        return _Way(await mx, port, None)
    # The policy lookup runs alongside the MX lookup; it never fails the delivery itself.
    targets, sts = await asyncio.gather(mx, _sts(host, resolver, store))
    return _Way(targets, port, None, sts)


async def _sts(host: str, resolver: AsyncResolver, store: PolicyStore) -> Found:
    try:
        return await discover.find(host, resolver, store, time.time())
    except Exception as e:  # noqa: BLE001 - a bug here must not stop mail: no policy
        return Found(None, problem=f"sts-policy-fetch-error: {e.__class__.__name__}: {e}")


async def deliver(
    settings: Settings,
    host: str,
    sender: bytes,
    recipients: list[bytes],
    message: bytes,
    resources: Resources | None = None,
    before_dot: BeforeDot | None = None,
) -> Outcome:
    """Sign and deliver one message to one destination host.

    ``before_dot`` is awaited just before each final dot (qremoted's commit with its
    client); the :class:`~qremote.smtp.session.Abandoned` it may raise ends the delivery
    and is raised from here: nothing was sent, no report is owed to anyone.

    Never raises for remote trouble. What was signed is said in every report that comes
    from a remote host, so the qmail-send log shows it next to the delivery.
    """
    if has_partial_final_line(message):
        return _final(report.PARTIAL_LINE)
    unsendable = _unsendable(sender, recipients)
    if unsendable is not None:
        return unsendable
    origin = source.choose(sender, settings.bindings, settings.outgoing_ip, settings.helo)
    try:
        source.check_local(origin)
    except ControlError as e:
        return _final(report.control_error(str(e)))
    try:
        signed = sign_message(message, sender, store_for(settings.control.path), settings.signing)
    except SigningError as e:
        return _final(report.sign_error(str(e)))
    except Unsignable as e:
        return _final(report.unsignable(str(e)))
    return await _send(
        settings,
        host,
        sender,
        recipients,
        (signed.headers, message),
        resources or Resources(),
        origin,
        [signed.note],
        lenient=is_tls_report(message, sender, settings.tlsrpt_contact),
        before_dot=before_dot,
    )


def _unsendable(sender: bytes, recipients: list[bytes]) -> Outcome | None:
    """A sender, or every recipient, that no server can ever be given: permanent at once.
    (Some recipients alone: the conversation refuses those and sends the rest.)"""
    why = addresses.fault(sender)
    if why is not None:
        return _final(report.bad_sender(why))
    faults = [addresses.fault(r) for r in recipients]
    if recipients and all(faults):
        return Outcome(
            [report.bad_recipient(f) for f in faults if f], report.NO_SENDABLE_RECIPIENT
        )
    return None


async def probe(
    settings: Settings, host: str, sender: bytes, progress: Callable[[str], None] | None = None
) -> Outcome:
    """Go where a delivery from ``sender`` to ``host`` would go, as far as the envelope
    (TLS, AUTH), and stop without sending anything: ``qremote check --route``.
    ``progress`` is told each step as it is reached, with the delivery's own time-outs."""
    origin = source.choose(sender, settings.bindings, settings.outgoing_ip, settings.helo)
    try:
        source.check_local(origin)
    except ControlError as e:
        return _final(report.control_error(str(e)))
    return await _send(
        settings, host, sender, [], (b"",), Resources(), origin, [], probe=True, progress=progress
    )


async def _send(
    settings: Settings,
    host: str,
    sender: bytes,
    recipients: list[bytes],
    parts: tuple[bytes, ...],
    resources: Resources,
    origin: source.Source,
    notes: list[str],
    probe: bool = False,
    lenient: bool = False,
    before_dot: BeforeDot | None = None,
    progress: Callable[[str], None] | None = None,
) -> Outcome:
    """Route and transmit an already signed message: ``parts`` are the signature fields
    and the queue file, sent one after the other (never joined into a copy).

    ``notes`` (what was signed) go into every report that comes from a remote host.
    ``lenient``: a TLS report, delivered without DANE or MTA-STS.
    """
    shown = host
    try:
        host = ascii_domain(host)  # every lookup and match by the A-label form
    except IdnError:
        return _final(report.perm_dns(shown.encode("utf-8", "surrogateescape")))
    store = None
    if settings.mta_sts and not lenient and not host.startswith("["):
        store = resources.sts or PolicyStore(settings.home)
    try:
        way = await _targets(settings, resources.resolver, host, sender, store, not lenient)
    except routes.RouteError as e:
        return _final(report.control_error(str(e)))
    except DnsHard as e:
        name = shown if str(e) == host else str(e)  # reports show what qmail-send gave
        return _final(report.perm_dns(name.encode("utf-8", "surrogateescape")))
    except DnsSoft:
        return _final(report.TEMP_DNS)
    except NullMx:
        return _final(report.null_mx(shown.encode("utf-8", "surrogateescape")))
    targets, port = way.targets, way.port
    routed = way.relay is not None
    if not targets:
        return _final(report.NOMX)
    chosen = usable(targets, settings.local, routed)
    if chosen is None:
        return _final(report.AMBIGUOUS_MX)
    chosen, refused = enforce_mx(settings.home, host, way.sts, chosen, origin.ip or "")
    if refused is not None:
        return _final(refused)

    body = Body(*parts)
    envelope = Envelope(
        helo=origin.helo,
        sender=sender,
        recipients=recipients,
        size=body.size,
        eight_bit=any(is_eight_bit(p) for p in parts),
        utf8_headers=not header_block(parts[-1]).isascii() or not parts[0].isascii(),
        strict_headers=settings.utf8_headers == "bounce",
    )
    # A relay is its own group: @domain rules are about the destination's MX hosts.
    grouped_by = "" if routed else host
    group = group_rules.group_for(grouped_by, [t.name for t in chosen], settings.groups)
    job = _Job(settings, port, envelope, body, origin, notes, group.name, resources.pool)
    job.relay, job.probe, job.tally = way.relay, probe, resources.tally
    job.domain, job.sts, job.before_dot = host, way.sts, before_dot
    job.progress = progress
    kept = None
    if job.pool is not None and job.pool.holds(group.name):
        kept = job.pool.checkout(group.name, _reuse_keys(job, chosen))
    shared = resources.shared
    if shared is None:
        shared = caps.shared_backend(settings.shared_state, settings.shared_lease)
    slot: caps.Slot | None
    try:
        if kept is not None:
            job.kept, slot, from_fleet = kept, kept.slot, True
        else:
            taken = await _take_slot(job, shared, group)
            job.notes = notes + taken.notes
            if taken.full:
                return _final(
                    _with_notes(
                        report.group_full(group.name, group.limit, settings.group_wait), job.notes
                    )
                )
            slot, from_fleet = taken.slot, taken.backend == "shared"
        # The fleet's tcpto only when Redis answered for the slot.
        fleet = SharedTcpto(shared.client) if shared is not None and from_fleet else None
        job.tcpto_ = Tcpto(TcptoFiles(settings.home), fleet)
        async with caps.Hold(slot) as job.hold, contextlib.AsyncExitStack() as unused:
            unused.push_async_callback(_quit_unused, job)
            outcome = await _each_host(job, host, chosen)
        if job.tcpto.notes:
            outcome.message = _with_notes(outcome.message, job.tcpto.notes)
        return outcome
    finally:
        if shared is not None and shared is not resources.shared:
            await shared.close()


async def _quit_unused(job: _Job) -> None:
    """A connection taken from the pool for this delivery and never used is ended."""
    if job.kept is not None:
        kept, job.kept = job.kept, None
        await kept.session.quit()


async def _take_slot(job: _Job, shared, group: group_rules.Group) -> caps.Taken:
    """A slot in the delivery's MX group. Idle kept connections of the group hold slots
    too: when the group is full, the longest-idle one is closed to free one, but not
    while a slot is free (the connection may yet carry a message)."""
    home, wait = job.settings.home, float(job.settings.group_wait)
    if job.pool is not None and job.pool.holds(group.name):
        taken = await caps.take(home, shared, group, 0.0)
        if not taken.full:
            return taken
        job.pool.evict_one(group.name)
    return await caps.take(home, shared, group, wait)


@dataclass
class _Job:
    """What every connection attempt of one delivery shares."""

    settings: Settings
    port: int
    envelope: Envelope
    body: Body
    origin: source.Source
    notes: list[str]
    """Lines for every report from a remote host (what was signed, cap fallbacks)."""
    group: str
    pool: ConnectionPool | None
    tcpto_: Tcpto | None = None
    hold: caps.Hold | None = None
    """The MX-group slot this delivery took (or its kept connection brought), and who owns
    it now: the delivery, or (handed on) the pool's kept connection."""
    kept: Kept | None = None
    """An idle connection taken from the pool for this delivery, not yet used."""
    relay: Relaying | None = None
    """The route's relay and how to talk to it (AUTH, TLS); None for MX delivery."""
    probe: bool = False
    """Stop before MAIL (``qremote check --route``)."""
    tally: Tally | None = None
    domain: str = ""
    sts: Found | None = None
    before_dot: BeforeDot | None = None
    """qremoted's commit with its client, before each final dot (None standalone)."""
    progress: Callable[[str], None] | None = None
    """``qremote check --route``'s way of saying each step as it is reached."""
    """The destination's MTA-STS policy, if one applies."""

    def watch(self, policy: Policy, target: Target) -> Watch:
        """Where this connection's TLS outcome goes (TLS report, status counts)."""
        sts = self.sts.policy if self.sts is not None else None
        lines, mx = (tuple(sts.lines()), sts.mx) if sts is not None else ((), ())
        held = held_by(policy, self.domain, lines, mx)
        ip = self.origin.ip or ""
        return Watch(self.settings.home, held, self.group, self.tally, ip, target.name, target.ip)

    @property
    def tcpto(self) -> Tcpto:
        """qmail's do-not-try list for this delivery, set up once its slot is held."""
        assert self.tcpto_ is not None
        return self.tcpto_


def _policy(job: _Job, target: Target) -> Policy:
    """The TLS policy for ``target``; ControlError when the files cannot be read."""
    settings = job.settings
    relay_tls = job.relay.tls if job.relay is not None else None
    first = settings.dane == "first"
    sts = job.sts.policy.mode if job.sts is not None and job.sts.policy is not None else None
    return decide(settings.tls_files, target.name, relay_tls, target.dane, first, sts)


def _tls_setup(
    job: _Job, target: Target, policy: Policy | None = None
) -> tuple[TlsSetup | None, list[str]]:
    """How to run TLS with ``target``, and notes; ControlError when it must not go on."""
    settings = job.settings
    policy = policy or _policy(job, target)
    if policy.failure is not None:
        raise _Unusable(report.dane_unusable(target.name, target.ip, policy.failure))
    if policy.mode is Mode.PLAIN:
        return None, []
    try:
        ctx = contexts.context_for(settings.control.path, policy)
    except ControlError as e:
        if policy.mode is Mode.REQUIRED:
            raise
        return None, [f"TLS not tried: {e}"]
    required = policy.mode is Mode.REQUIRED
    return TlsSetup(ctx, target.name, required, policy.implicit, policy.dane), []


class _Unusable(Exception):
    """This address must not be tried now (its TLSA lookup failed); the report says why."""

    def __init__(self, text: bytes) -> None:
        super().__init__()
        self.report = text


def _key(job: _Job, target: Target, tls: TlsSetup | None) -> Key:
    wanted = (tls.server_name, tls.required, id(tls.context)) if tls is not None else None
    account = job.relay.identity() if job.relay is not None else None
    return Key(target.ip, job.port, job.origin.ip, job.origin.helo, wanted, account)


def _reuse_keys(job: _Job, chosen: list[Target]) -> list[Key]:
    """Keys of idle connections this delivery may use: to the addresses qmail would
    try first (the lowest preference), set up as a new connection would be."""
    keys = []
    for target in chosen:
        if target.pref != chosen[0].pref or not job.origin.serves(target.ip):
            continue
        try:
            tls, _ = _tls_setup(job, target)
        except (ControlError, _Unusable):
            continue
        keys.append(_key(job, target, tls))
        if tls is not None and not tls.required:
            # Opportunistic: a connection kept as plain text (no STARTTLS offered, or a
            # failed handshake) is what a new one may well end up as; it is taken as
            # what it is, plain, never as one with TLS.
            keys.append(_key(job, target, None))
    return keys


async def _each_host(job: _Job, host: str, chosen: list[Target]) -> Outcome:
    """Try the addresses in order, as qmail does, until one gives an answer.

    A kept connection's address goes first: it is one of those qmail picks from at
    random among the lowest preference anyway.
    """
    origin = job.origin
    served = frozenset(t.ip for t in chosen if origin.serves(t.ip))
    walk = Walk(chosen, served, job.kept.key.ip if job.kept is not None else None)
    for target in walk.order():
        live = job.kept is not None and job.kept.key.ip == target.ip
        if not live and await job.tcpto.skip(target.ip):
            continue
        result = await _try_host(job, target)
        if isinstance(result, Outcome):
            return result
        if result is not None:
            walk.refused(Refusal(result.report, result.permanent))
    note = report.note_no_family(host, str(origin.ip), origin.where)
    text, notes = walk.final(note)
    return _final(_with_notes(text, notes))


async def _open(job: _Job, target: Target, tls: TlsSetup | None) -> Session | None:
    """A new connection and conversation to ``target``; None when it cannot be reached."""
    settings = job.settings
    if job.progress is not None:
        job.progress(f"connecting to {target.ip} port {job.port} ({target.name})")
    try:
        reader, writer = await connect(target.ip, job.port, settings.timeout_connect, job.origin.ip)
    except ConnectFailed as e:
        await job.tcpto.record(target.ip, e.timed_out)
        if job.progress is not None:
            job.progress(f"cannot connect to {target.ip}: {e}")
        return None
    await job.tcpto.record(target.ip, False)
    relay = job.relay
    login = None
    if relay is not None and relay.credentials is not None:
        login = Login(relay.credentials, relay.mechanism, relay.where)
    conv = Conversation(
        partner=target.ip,
        envelope=job.envelope,
        want_tls=tls is not None,
        require_tls=tls is not None and tls.required,
        keep_open=job.pool is not None and job.pool.limits.idle > 0,
        login=login,
        route=relay.where if relay is not None else None,
        probe=job.probe,
    )
    session = Session(reader, writer, conv, job.body, settings.timeout_remote, tls)
    session.progress = job.progress
    return session


async def _try_host(job: _Job, target: Target) -> Outcome | NextHost | None:
    """One address: an Outcome ends the delivery; NextHost or None moves on."""
    try:
        policy = _policy(job, target)
        watch = job.watch(policy, target)
        tls, notes = _tls_setup(job, target, policy)
    except ControlError as e:
        return _final(report.control_error(str(e)))
    except _Unusable as e:
        watch.failure("dnssec-invalid")
        return NextHost(_with_notes(e.report, job.notes), False)
    notes = job.notes + notes
    if policy.sts is not None and job.sts is not None:
        notes.append(report.note_sts(policy.sts, job.sts.policy_id))
    key = _key(job, target, tls)
    kept, job.kept = job.kept, None
    if kept is not None and tls is not None and not tls.required:
        if kept.key == _key(job, target, None):
            tls = None  # a kept plain-text connection: used as what it is
            key = kept.key
    if kept is not None and kept.key != key:
        await kept.session.quit()  # the TLS files changed since it was opened
        kept = None
    attempt = HostAttempt(tls is not None, tls is not None and tls.required)
    while True:
        if kept is not None:
            session = kept.session
            start = session.next_message(job.envelope, job.body)
            born, carried = kept.born, kept.messages
        else:
            opened = await _open(job, target, tls)
            if opened is None:
                attempt.after(Event.UNREACHABLE)  # the next address
                return None
            session = opened
            start, born, carried = None, time.monotonic(), 0
            if not watch.sending_ip:  # the address the system chose, for the TLS report
                local = session.writer.get_extra_info("sockname")
                watch.sending_ip = str(local[0]) if local else ""
        conv = session.conv
        session.before_dot = job.before_dot
        try:
            result = await session.run(start)
        except Dropped:
            await session.close()
            idle = kept is not None and conv.state is State.RSET
            if attempt.after(Event.DIED_IDLE if idle else Event.OVER) is Next.NEW_CONNECTION:
                kept = None  # it died while idle: nothing of this message was sent
                continue
            return Outcome(
                _in_order(session.recipients),
                _with_notes(dropped_report(conv), notes),
            )
        except TlsFailed as e:
            await session.close()
            if kept is None and (policy.verified or policy.dane is not None):
                watch.failure(result_type(str(e)))
            if policy.sts == "testing" and tls is not None and tls.context.verify_mode:
                # MTA-STS testing: the failure is reported; the mail goes with TLS as before.
                notes.append(report.note_sts_testing_failed(str(e)))
                tls, _ = _tls_setup(job, target, Policy(Mode.OPPORTUNISTIC))
                continue
            if attempt.after(Event.TLS_FAILED) is Next.PLAIN:
                notes.append(report.note_tls_retried(target.ip, str(e)))
                tls = None
                continue
            if tls is not None and (tls.dane is not None or policy.sts == "enforce"):
                # This host cannot be authenticated; another MX of the domain may be.
                return NextHost(_with_notes(report.tls_failed(target.ip, str(e)), notes), False)
            return _final(report.tls_failed(target.ip, str(e)))
        except BaseException:
            session.abort()  # cancelled (qremoted stopping) or a bug: never leave it open
            raise
        final = result.final
        if isinstance(final, Stale):
            await session.close()
            if attempt.after(Event.STALE) is Next.NEW_CONNECTION:
                kept = None  # nothing of the message was sent on it
                continue
            return None
        if result.tls_info:
            notes.append(result.tls_info)
            if kept is None and tls is not None and tls.context.verify_mode:
                watch.success()
            elif kept is None and tls is not None and policy.dane is not None:
                watch.success()  # TLSA records, all unusable: TLS was what they asked
        elif kept is None and tls is not None and not isinstance(final, NextHost):
            watch.failure("starttls-not-supported")
        if result.auth_info:
            notes.append(result.auth_info)
        if conv.raw_headers:
            notes.append(report.NOTE_RAW_HEADERS)
        if conv.eight_bit_unasked:
            notes.append(report.NOTE_8BIT)
        if kept is not None:
            notes.append(report.note_reused(target.ip, carried + 1))
        if isinstance(final, Finished):
            if final.open:
                # Kept under what it is: a connection that fell back to plain text (or
                # to unverified TLS) must not be taken for one with the TLS it was
                # opened for.
                now_key = _key(job, target, tls if conv.tls else None)
                await _keep_or_quit(job, now_key, session, born, carried + 1)
            else:
                await session.close()
            return Outcome(_in_order(result.recipients), _with_notes(final.report, notes))
        await session.close()
        return NextHost(_with_notes(final.report, notes), final.permanent)


def _in_order(reports: list[RecipientReport]) -> list[bytes]:
    """Recipient reports in the envelope's order, as qmail-rspawn reads them (a recipient
    refused before its RCPT, for SMTPUTF8, is reported before those asked about)."""
    return [r.report for r in sorted(reports, key=lambda r: r.index)]


async def _keep_or_quit(job: _Job, key: Key, session: Session, born: float, carried: int) -> None:
    """Hand the connection and its MX-group slot to the pool, or end it."""
    if job.pool is not None and job.hold is not None and job.hold.slot is not None:
        kept = Kept(key, session, job.hold.slot, job.group, born, carried)
        if job.pool.checkin(kept):
            job.hold.hand_on()
            return
    await session.quit()
