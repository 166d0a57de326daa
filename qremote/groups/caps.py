"""Taking a slot in a delivery's MX group, with the backend the control files choose.

``control/sharedstate`` holding a ``redis://`` URL selects the shared backend; if Redis
cannot be reached the local one is used and the report says so. If even the local state
folder cannot be used the delivery goes ahead uncapped, and the report says that too:
a cap protects our reputation, it must never stop mail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from qremote.groups.filelocks import FileBackend
from qremote.groups.rules import Group


@dataclass
class Taken:
    slot: object | None
    """The held slot (None when caps are off or the group stayed full)."""
    full: bool
    notes: list[str]


class _NoSlot:
    def release(self) -> None:
        pass


def shared_backend(url: str | None, lease: int):
    """The Redis backend for ``control/sharedstate``, or None (no network traffic yet)."""
    if not url:
        return None
    from qremote.groups.shared import SharedBackend

    return SharedBackend(url, lease)


async def take(home: str, shared, group: Group, wait: float) -> Taken:
    """A slot from the shared backend when there is one and it answers, else locally."""
    notes: list[str] = []
    if shared is not None:
        try:
            slot = await shared.acquire(group.name, group.limit, wait)
            return Taken(slot, slot is None, notes)
        except Exception as e:  # noqa: BLE001 - any Redis trouble: fall back, never block
            notes.append(
                f"Shared state {shared.url} unreachable ({e.__class__.__name__}); "
                "local MX-group caps used."
            )
    local = FileBackend(os.path.join(home, "qremote"))
    try:
        slot = await local.acquire(group.name, group.limit, wait)
    except OSError as e:
        notes.append(f"MX-group caps off: {e.strerror} in {local.root}.")
        return Taken(_NoSlot(), False, notes)
    return Taken(slot, slot is None, notes)
