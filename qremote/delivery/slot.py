"""Step 4 of a delivery: its place in the MX group (control/mxgroups), or an idle kept
connection of the group that brings its own.

Idle kept connections hold slots too: when the group is full, the longest-idle one is
closed to free one, but not while a slot is free (the connection may yet carry a
message); a qremoted worker without one asks its siblings to close one of theirs.
Which backend gave the slot decides whether the fleet's tcpto is asked too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from qremote import report
from qremote.delivery.outcome import Notes, Outcome
from qremote.delivery.resources import Resources
from qremote.delivery.route import Route
from qremote.delivery.tlsplan import reuse_keys
from qremote.groups import caps
from qremote.groups.rules import Group
from qremote.metrics.trace import Trace
from qremote.settings import Settings
from qremote.smtp.pool import Kept
from qremote.tcpto.shared import SharedTcpto
from qremote.tcpto.store import Tcpto, TcptoFiles


@dataclass(frozen=True)
class Place:
    """The slot a delivery holds, and what came with it."""

    slot: caps.Slot | None
    """None only where no cap applies (see caps.Taken)."""
    kept: Kept | None
    """An idle connection of the group, taken out of the pool (its slot is ``slot``)."""
    fleet: bool
    """Redis answered for the slot (or it came with a kept connection)."""

    def tcpto(self, settings: Settings, resources: Resources) -> Tcpto:
        """qmail's do-not-try list; the fleet's too only when Redis answered."""
        shared = resources.shared
        fleet = SharedTcpto(shared.client) if shared is not None and self.fleet else None
        return Tcpto(TcptoFiles(settings.home), fleet)


async def claim(
    settings: Settings,
    resources: Resources,
    route: Route,
    group: Group,
    notes: Notes,
    trace: Trace,
) -> Place | Outcome:
    """A kept connection of the group that fits, else a slot; the report when the group
    stayed full for ``control/mxgroupwait`` seconds. Why the caps fell back (Redis
    unusable, local caps off) goes into ``notes``; how the place came, into ``trace``."""
    pool = resources.pool
    if pool is not None and pool.holds(group.name):
        kept = pool.checkout(group.name, reuse_keys(settings, route))
        if kept is not None:
            trace.slot = "kept"
            return Place(kept.slot, kept, True)
    started = time.monotonic()
    taken, waited = await _take(settings, resources, group)
    trace.slot_seconds = time.monotonic() - started
    notes.extend(taken.notes)
    if taken.full:
        trace.slot = "full"
        text = report.group_full(group.name, group.limit, settings.group_wait)
        return Outcome.final(notes.after(text))
    trace.slot = "off" if taken.backend == "off" else "waited" if waited else "free"
    return Place(taken.slot, None, taken.backend == "shared")


async def _take(settings: Settings, resources: Resources, group: Group) -> tuple[caps.Taken, bool]:
    """The slot (or why not), and whether it had to be waited for: a first try without
    waiting; when the group is full, one of its idle kept connections is closed (its
    slot is then the next free) and the delivery waits up to ``mxgroupwait``."""
    home, wait, pool = settings.home, float(settings.group_wait), resources.pool
    taken = await caps.take(home, resources.shared, group, 0.0)
    if not taken.full:
        return taken, False
    evicted = pool is not None and pool.evict_one(group.name)
    if not evicted and resources.ask_siblings is not None:
        resources.ask_siblings(group.name)  # their idle connections may hold the slots
    return await caps.take(home, resources.shared, group, wait), True
