"""Idle SMTP connections kept between deliveries by a long-lived process (qremoted).

A connection is kept only after the server answered a message's final dot with anything
but 421, and only while it stays within the limits below. It keeps the MX-group slot its
delivery took, so idle connections count against the group's cap exactly like busy ones;
a delivery that cannot use them may evict one to get a slot. Each connection is keyed by
everything that made it what it is: address, port, source address, HELO name and the
TLS setup that was asked for, so a message never rides a connection it would not have
opened itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qremote.background import Background
from qremote.metrics.trace import CLOSED_IDLE, CLOSED_RELOAD
from qremote.smtp.session import Session

if TYPE_CHECKING:
    from qremote.groups.caps import Slot


@dataclass(frozen=True)
class Limits:
    """From ``control/reuseidle``, ``control/reusemessages``, ``control/reuseage`` (their
    defaults are in :data:`qremote.settings.CONTROL_FILES`)."""

    idle: float
    """Seconds an unused connection stays open; 0 turns reuse off."""
    messages: int
    """Messages one connection may carry, as Postfix's smtp_connection_reuse_count_limit."""
    age: float
    """Seconds after which a connection is not used again, as Postfix's
    smtp_connection_reuse_time_limit."""


def keepable(limits: Limits, messages: int, age: float) -> bool:
    """May a connection that has carried ``messages`` and is ``age`` seconds old be kept?"""
    return limits.idle > 0 and messages < limits.messages and age < limits.age


@dataclass(frozen=True)
class Key:
    ip: str
    port: int
    source: str | None
    helo: str
    tls: tuple[str, bool, int] | None
    """What TLS was asked for (server name, required, context id), None for plain SMTP."""
    account: tuple[str, str, bool] | None = None
    """For a relay with AUTH or implicit TLS: a digest of the credentials, the mechanism
    the route names, implicit TLS; so a message rides only a connection logged in as the
    account its own route names (see :meth:`qremote.relay.plan.Relaying.identity`)."""


@dataclass(eq=False)
class Kept:
    key: Key
    session: Session
    slot: Slot
    group: str
    born: float
    messages: int
    idle_since: float = field(default_factory=time.monotonic)
    timer: asyncio.TimerHandle | None = None


class ConnectionPool:
    """Idle connections by key; every method is called from the event loop's thread."""

    def __init__(self, limits: Limits, closed: Callable[[str], None] | None = None) -> None:
        self.limits = limits
        self._idle: list[Kept] = []
        self._closing = Background()
        self._closed = closed
        """Told why each kept connection it ends was closed (qremoted's counts)."""

    def checkout(self, group: str, keys: list[Key]) -> Kept | None:
        """The idle connection of ``group`` for the first of ``keys`` that has one, taken
        out of the pool. The group must match too: its slot counts against that group."""
        for kept in [k for k in self._idle if k.session.closed]:
            self._expire(kept)  # the server closed it while idle: free its slot now
        for key in keys:
            for kept in self._idle:
                if kept.key == key and kept.group == group:
                    self._remove(kept)
                    return kept
        return None

    def holds(self, group: str) -> bool:
        """Whether any idle connection of ``group`` is kept (cheap: no keys needed)."""
        return any(k.group == group for k in self._idle)

    def checkin(self, kept: Kept) -> bool:
        """Keep ``kept`` for the next message if the limits allow; False means the caller
        still owns the connection and its slot."""
        if not keepable(self.limits, kept.messages, time.monotonic() - kept.born):
            return False
        kept.idle_since = time.monotonic()
        kept.timer = asyncio.get_running_loop().call_later(self.limits.idle, self._expire, kept)
        self._idle.append(kept)
        return True

    def evict_one(self, group: str) -> bool:
        """Close the longest-idle connection of ``group``, freeing its slot (once closed)
        for a delivery that cannot use it."""
        for kept in self._idle:
            if kept.group == group:
                self._expire(kept)
                return True
        return False

    def describe(self) -> list[str]:
        now = time.monotonic()
        return [
            f"{k.key.ip}:{k.key.port} from {k.key.source or 'any'} group {k.group}: "
            f"{k.messages} messages, open {now - k.born:.0f}s, idle {now - k.idle_since:.1f}s"
            f"{', TLS' if k.session.tls_info else ''}"
            for k in self._idle
        ]

    def groups(self) -> list[str]:
        """The MX group of each idle connection (each holds one of its slots)."""
        return [k.group for k in self._idle]

    def __len__(self) -> int:
        return len(self._idle)

    def _remove(self, kept: Kept) -> None:
        self._idle.remove(kept)
        if kept.timer is not None:
            kept.timer.cancel()
            kept.timer = None

    def _expire(self, kept: Kept, why: str = CLOSED_IDLE) -> None:
        if kept in self._idle:  # once only: its slot must be released exactly once
            self._remove(kept)
            if self._closed is not None:
                self._closed(why)
            self.discard(kept)

    def discard(self, kept: Kept) -> None:
        """Say QUIT and close in the background, then free the slot: not before, or the
        group could briefly hold one connection more than its cap."""
        self._closing.start(self._close(kept))

    async def _close(self, kept: Kept) -> None:
        try:
            await kept.session.quit()
        finally:
            kept.slot.release()

    async def close(self) -> None:
        """Close every idle connection (shutdown or a control-file reload)."""
        for kept in list(self._idle):
            self._expire(kept, CLOSED_RELOAD)
        await self._closing.wait()
