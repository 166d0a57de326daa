"""Message rates as GCRA (the generic cell rate algorithm) and the stepwise return of a
lowered rate: pure arithmetic over times, so tests need no clock and no files.

GCRA keeps one number per path, the theoretical arrival time (TAT): the earliest moment
the next message may go at the configured rate. A delivery arriving at ``now`` may go at
``max(TAT, now)``; it reserves that moment by moving TAT one emission interval (period /
count) past it. Messages are so spaced evenly, and the rate is never exceeded over any
window: a burst waits its turn rather than going at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from qremote.shaping.config import Rate

RECOVERY_STEP = 600
"""Seconds between two steps of a lowered rate's return: when an automation rule's
duration ends the rate doubles, then doubles again every this many seconds without a
new match, until it is back to the configured one."""

RECOVERY_STEPS_UNLIMITED = 6
"""Steps after which a lowered rate on a path without a configured rate (unlimited) is
lifted altogether: 64 times the lowered rate by then."""


@dataclass(frozen=True)
class Admitted:
    tat: float
    """The new theoretical arrival time, to store."""
    wait: float
    """Seconds to wait before connecting (0: at once)."""


@dataclass(frozen=True)
class Refused:
    free_in: float
    """Seconds until the path would take a message."""


def admit(tat: float, now: float, rate: Rate, max_wait: float) -> Admitted | Refused:
    """GCRA with a bounded wait: go now, go after at most ``max_wait`` seconds, or not."""
    at = max(tat, now)
    wait = at - now
    if wait > max_wait:
        return Refused(wait)
    return Admitted(at + rate.interval, wait)


@dataclass(frozen=True)
class Lowered:
    """A rate an automation rule set for a while (SetConfig max_message_rate)."""

    rate: Rate
    since: float
    until: float
    text: str
    """The reply that matched."""


def current(normal: Rate | None, lowered: Lowered | None, now: float) -> Rate | None:
    """The rate in force: the lowered one until its duration ends, then doubling every
    :data:`RECOVERY_STEP` seconds until it reaches the configured one (None: unlimited,
    reached after :data:`RECOVERY_STEPS_UNLIMITED` steps)."""
    if lowered is None:
        return normal
    if now < lowered.until:
        return lowered.rate
    steps = int((now - lowered.until) // RECOVERY_STEP) + 1
    if normal is None and steps >= RECOVERY_STEPS_UNLIMITED:
        return None
    count = lowered.rate.count * 2 ** min(steps, 40)
    stepped = Rate(count, lowered.rate.period, f"{count}/{_unit(lowered.rate.period)}")
    if normal is not None and count / lowered.rate.period >= normal.count / normal.period:
        return normal
    return stepped


def recovered(normal: Rate | None, lowered: Lowered, now: float) -> bool:
    """The lowered rate has climbed back to the configured one: its record can go."""
    return now >= lowered.until and current(normal, lowered, now) == normal


def _unit(period: int) -> str:
    return {1: "s", 60: "min", 3600: "h", 86400: "day"}.get(period, f"{period}s")
