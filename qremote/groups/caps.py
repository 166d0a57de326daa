"""Taking a slot in a delivery's MX group, with the backend the control files choose.

``control/sharedstate`` holding a ``redis://`` URL selects the shared backend; if Redis
cannot be reached, or redis-py cannot be imported, the local one is used and the report
says so. If even the local state folder cannot be used the delivery goes ahead uncapped,
and the report says that too: a cap protects our reputation, it must never stop mail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from qremote import report
from qremote.groups.filelocks import FileBackend
from qremote.groups.rules import Group


class Slot(Protocol):
    """A slot in an MX group, held until released (by a delivery or a kept connection)."""

    def release(self) -> None: ...


class SharedState(Protocol):
    """The fleet-wide backend of ``control/sharedstate`` (Redis), or its stand-in."""

    url: str
    client: Any
    """The Redis client, shared with the fleet's tcpto; None for a stand-in."""

    async def acquire(self, group: str, limit: int, wait: float) -> Slot | None: ...

    async def close(self) -> None: ...


@dataclass
class Taken:
    slot: Slot | None
    """The held slot (None when the group stayed full)."""
    full: bool
    notes: list[str]
    backend: Literal["shared", "local", "off"]
    """Where the slot came from: the fleet's Redis, this host's files, or nowhere (caps
    off, the files unusable); the fleet's tcpto is used only when it is ``shared``."""


class Hold:
    """The one owner of a delivery's MX-group slot at a time: the delivery, until it hands
    the slot on with a kept connection (:meth:`hand_on`); whatever happens, a slot the
    delivery still owns is released when it leaves the ``async with``."""

    def __init__(self, slot: Slot | None) -> None:
        self.slot = slot
        self._owned = slot is not None

    def hand_on(self) -> Slot:
        """The slot, now owned by whoever took it (the connection pool)."""
        assert self.slot is not None and self._owned
        self._owned = False
        return self.slot

    async def __aenter__(self) -> Hold:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._owned and self.slot is not None:
            self._owned = False
            self.slot.release()


class _NoSlot:
    def release(self) -> None:
        pass


class BackendUnusable(Exception):
    """The shared backend cannot be used at all here (its library is missing or broken)."""


class UnloadableBackend:
    """Stands in for the Redis backend when redis-py cannot be loaded: every delivery
    then takes the local path, with a note, exactly as when Redis does not answer."""

    client: Any = None

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason

    async def acquire(self, group: str, limit: int, wait: float) -> None:
        raise BackendUnusable(self.reason)

    async def close(self) -> None:
        pass


def shared_backend(url: str | None, lease: int) -> SharedState | None:
    """The Redis backend for ``control/sharedstate``, or None (no network traffic yet)."""
    if not url:
        return None
    try:
        # start-up: redis-py only when control/sharedstate names Redis
        from qremote.groups.shared import SharedBackend

        return SharedBackend(url, lease)
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken install: never stop mail
        return UnloadableBackend(url, f"redis-py cannot be loaded: {e.__class__.__name__}: {e}")


async def take(home: str, shared: SharedState | None, group: Group, wait: float) -> Taken:
    """A slot from the shared backend when there is one and it answers, else locally."""
    notes: list[str] = []
    if shared is not None:
        try:
            slot = await shared.acquire(group.name, group.limit, wait)
            return Taken(slot, slot is None, notes, "shared")
        except BackendUnusable as e:
            notes.append(report.note_shared_unusable(shared.url, str(e)))
        except Exception as e:  # noqa: BLE001 - any Redis trouble: fall back, never block
            notes.append(report.note_shared_unreachable(shared.url, e.__class__.__name__))
    local = FileBackend(os.path.join(home, "qremote"))
    try:
        slot = await local.acquire(group.name, group.limit, wait)
    except OSError as e:
        notes.append(report.note_caps_off(str(e.strerror), local.root))
        return Taken(_NoSlot(), False, notes, "off")
    return Taken(slot, slot is None, notes, "local")
