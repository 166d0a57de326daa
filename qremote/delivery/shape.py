"""Step 4a of a delivery: traffic shaping (control/shaping.toml), between the route and
the MX-group slot.

Before the slot: a suspended path answers ``Z`` at once, without connecting, quoting the
provider's words and when the suspension lifts; a path with a message rate reserves its
turn (GCRA) and waits for it when it comes within ``control/shapingwait`` seconds, else
answers ``Z`` at once saying which limit and when it frees. A delivery that waits holds
one of qmail-send's concurrencyremote slots, so the wait is short; qmail's own retry
schedule does the rest.

Between: a path with a connection rate reserves a turn, the same way, for each new
connection (a kept connection's next message opens none), and a connection is not kept
past the path's ``max_deliveries_per_connection``.

After the connections: the words of a failed delivery are matched against the path's
automation rules, which may suspend the path or lower its rate for a while, with a note
in the report.

Where it is kept: with ``control/sharedstate``, in Redis for the whole fleet
(:mod:`qremote.shaping.shared`); else, or when Redis does not answer (a note says so),
in this host's files (:mod:`qremote.shaping.state`). Shaping's storage failing never
stops mail: the delivery goes on unshaped, and the report says why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from qremote import report
from qremote.delivery.outcome import Notes, Outcome, with_notes
from qremote.delivery.resources import Resources
from qremote.delivery.route import Route
from qremote.metrics.trace import Trace
from qremote.settings import Settings
from qremote.shaping import rates
from qremote.shaping.automation import react
from qremote.shaping.config import Path, Rate
from qremote.shaping.shared import SharedStore
from qremote.shaping.state import PathState, Store, Suspension


class _Where:
    """The store a delivery shapes with: the fleet's, else (or once it failed) the
    host's; what went wrong goes into the notes."""

    def __init__(self, settings: Settings, resources: Resources, notes: list[str]) -> None:
        client = getattr(resources.shared, "client", None)
        self.shared = SharedStore(client) if client is not None else None
        self.url = settings.shared_state or ""
        self.local = Store(settings.home)
        self.notes = notes

    def _failed(self, e: Exception) -> None:
        self.shared = None
        self.notes.append(report.note_shaping_local(self.url, e.__class__.__name__))

    async def read(self, group: str, source: str) -> PathState:
        if self.shared is not None:
            try:
                return await self.shared.read(group, source)
            except Exception as e:  # noqa: BLE001 - any Redis trouble: this host's files
                self._failed(e)
        return self.local.read(group, source)

    async def reserve(
        self, group: str, source: str, rate: Rate, max_wait: float
    ) -> rates.Admitted | rates.Refused:
        if self.shared is not None:
            try:
                return await self.shared.reserve(group, source, rate, max_wait)
            except Exception as e:  # noqa: BLE001 - any Redis trouble: this host's files
                self._failed(e)
        return self.local.reserve(group, source, rate, time.time(), max_wait)

    async def update(
        self, group: str, source: str, change: Callable[[PathState], PathState]
    ) -> None:
        if self.shared is not None:
            try:
                await self.shared.update(group, source, change)
                return
            except Exception as e:  # noqa: BLE001 - any Redis trouble: this host's files
                self._failed(e)
        self.local.update(group, source, change)


EVERY_GROUP = "*"
"""The group of a source address's own path (its rate and warm-up over every group)."""

CONNECTIONS = "{group} connections"
"""Where a path's connection turns are kept, apart from its message turns."""


@dataclass(frozen=True)
class Shaped:
    """What shaping asks of one delivery's connections: its path and source address."""

    path: Path
    source: str

    @property
    def per_connection(self) -> int | None:
        """Messages a connection of this path may carry (None: no limit of its own)."""
        return self.path.config.max_deliveries_per_connection


async def admit(
    settings: Settings,
    resources: Resources,
    path: Path,
    source: str,
    notes: Notes,
    trace: Trace,
) -> Outcome | None:
    """None: go on (perhaps after waiting); else the ``Z`` that ends the delivery from
    this source (and ``trace.shaped`` says why: ``suspended``, ``rate`` or ``source``)."""
    config = path.config
    own = settings.shaping.shaping.sources.get(source)
    if config.max_message_rate is None and not config.automation and own is None:
        return None
    where = _Where(settings, resources, notes.lines)
    now = time.time()
    max_wait = float(settings.shaping_wait)
    wait = 0.0
    try:
        state = await where.read(path.group, source) if config.automation else None
        if state is not None and state.suspended is not None and now < state.suspended.until:
            s = state.suspended
            trace.shaped = "suspended"
            return Outcome.final(report.shaping_suspended(path.group, source, s.until, s.text))
        lowered = state.lowered if state is not None else None
        rate = rates.current(config.max_message_rate, lowered, now)
        if rate is not None:
            decision = await where.reserve(path.group, source, rate, max_wait)
            if isinstance(decision, rates.Refused):
                trace.shaped = "rate"
                text = report.rate_limited(path.group, source, rate.text, decision.free_in)
                return Outcome.final(text)
            wait = decision.wait
        own_rate = own.rate(now) if own is not None else None
        if own_rate is not None:
            decision = await where.reserve(EVERY_GROUP, source, own_rate, max_wait)
            if isinstance(decision, rates.Refused):
                trace.shaped = "source"
                text = report.source_limited(source, own_rate.text, decision.free_in)
                return Outcome.final(text)
            wait = max(wait, decision.wait)
    except OSError as e:
        notes.add(report.note_shaping_off(f"{e.strerror or e}"))
        return None
    if wait > 0:
        await asyncio.sleep(wait)
    return None


async def admit_route(
    settings: Settings,
    resources: Resources,
    found: Route,
    path: Path,
    notes: Notes,
    trace: Trace,
) -> tuple[Route, str] | Outcome:
    """The route from the first of the sender's addresses shaping admits (its turn
    waited for), with that address as the path's source; the last refusal when none
    does. Overflow to a further address of control/domainbindings is said in a note."""
    bound = found.origin
    candidates = [bound.ip, *bound.overflow]
    refused: Outcome | None = None
    for ip in candidates:
        source = str(ip or "default")
        refused = await admit(settings, resources, path, source, notes, trace)
        if refused is None:
            trace.shaped = ""  # an earlier address's refusal is not this delivery's
            if ip != bound.ip:
                notes.add(report.note_overflow(str(bound.ip), source, path.group))
                found = replace(found, origin=replace(bound, ip=ip))
            return found, source
    assert refused is not None
    return refused


async def connection_turn(
    settings: Settings, resources: Resources, shaped: Shaped, notes: Notes, trace: Trace
) -> bytes | None:
    """None: open the connection (after waiting for its turn); else the ``Z`` text, and
    nothing is connected to."""
    rate = shaped.path.config.max_connection_rate
    if rate is None:
        return None
    group = CONNECTIONS.format(group=shaped.path.group)
    where = _Where(settings, resources, notes.lines)
    try:
        decision = await where.reserve(group, shaped.source, rate, float(settings.shaping_wait))
    except OSError as e:
        notes.add(report.note_shaping_off(f"{e.strerror or e}"))
        return None
    if isinstance(decision, rates.Refused):
        trace.shaped = "connection"
        group, source = shaped.path.group, shaped.source
        return report.connection_rate_limited(group, source, rate.text, decision.free_in)
    if decision.wait > 0:
        await asyncio.sleep(decision.wait)
    return None


def failures(outcome: Outcome) -> list[str]:
    """The server's words in each report that is not a success (from ``Remote host
    said:`` on, where the report has them), for the rules to match and to quote."""
    texts = [r[1:] for r in outcome.recipients if r[:1] in (b"h", b"s")]
    if outcome.message[:1] in (b"Z", b"D"):
        texts.append(outcome.message[1:])
    out = []
    for text in texts:
        _, said, words = text.partition(report.REMOTE_SAID)
        out.append((words if said else text).decode("utf-8", "replace"))
    return out


async def observe(
    settings: Settings, resources: Resources, path: Path, source: str, outcome: Outcome
) -> None:
    """Match a failed delivery's words against the path's automation rules; what they
    set off is stored for every process (and host) and said in the report."""
    rules = path.config.automation
    texts = failures(outcome) if rules else []
    if not texts:
        return
    now = time.time()
    said: list[str] = []

    def change(state: PathState) -> PathState:
        for text in texts:
            effect, state.matches = react(rules, text, now, state.matches)
            if effect is None:
                continue
            if effect.suspend_for:
                state.suspended = Suspension(now, now + effect.suspend_for, effect.text)
                said.append(report.note_suspended(path.group, source, effect.suspend_for))
            if effect.rate is not None:
                state.lowered = rates.Lowered(effect.rate, now, now + effect.rate_for, effect.text)
                said.append(
                    report.note_rate_lowered(path.group, source, effect.rate.text, effect.rate_for)
                )
        if state.suspended is not None and now >= state.suspended.until:
            state.suspended = None
        if state.lowered is not None and rates.recovered(
            path.config.max_message_rate, state.lowered, now
        ):
            state.lowered = None
        return state

    notes: list[str] = []
    try:
        await _Where(settings, resources, notes).update(path.group, source, change)
    except OSError as e:
        notes.append(report.note_shaping_off(f"{e.strerror or e}"))
    if said or notes:
        outcome.message = with_notes(outcome.message, [*notes, *dict.fromkeys(said)])
