"""The embedded backend: one file per slot under ``$QMAILHOME/qremote/groups/``, held with
flock, so the kernel frees a slot when its process dies, however it dies.

Waiting is fair: a waiter takes a numbered ticket (a file it holds locked) and only the
oldest live ticket may try for a free slot. A ticket whose file is no longer locked
belongs to a dead process and is swept away by the next waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import threading
import time
from dataclasses import dataclass

HEAD_POLL = 0.005
"""Only the oldest waiter polls the slots; the others sleep on their predecessor's lock."""


def group_dir(root: str, name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in name)[:40]
    return os.path.join(root, "groups", f"{safe}-{digest}")


def _try_lock(path: str, create: bool = True) -> int | None:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd



def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)

async def _until_unlocked(path: str, deadline: float) -> None:
    """Wait until the waiter ahead of us lets go of its ticket (it got a slot, gave up,
    or died), or until our deadline. The blocking flock runs in a thread of its own; it
    ends at the latest when that waiter's own, earlier deadline passes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def block() -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            pass
        finally:
            os.close(fd)
            loop.call_soon_threadsafe(_settle, done)

    threading.Thread(target=block, daemon=True).start()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(done), max(deadline - time.monotonic(), 0))


@dataclass
class FileSlot:
    fd: int
    group: str

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class FileBackend:
    """Slots held by flock; ``root`` is ``$QMAILHOME/qremote``."""

    name = "local"

    def __init__(self, root: str) -> None:
        self.root = root

    def _prepare(self, group: str) -> str:
        folder = group_dir(self.root, group)
        os.makedirs(os.path.join(folder, "tickets"), exist_ok=True)
        label = os.path.join(folder, "name")
        if not os.path.exists(label):
            tmp = f"{label}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(group + "\n")
            os.rename(tmp, label)
        return folder

    def _grab(self, folder: str, limit: int) -> int | None:
        for i in range(limit):
            fd = _try_lock(os.path.join(folder, f"slot.{i}"))
            if fd is not None:
                return fd
        return None

    def _live_tickets(self, folder: str, mine: str | None) -> list[str]:
        """Ticket names of live waiters, oldest first; dead ones are removed."""
        tickets = os.path.join(folder, "tickets")
        live = []
        for name in sorted(os.listdir(tickets)):
            if name.startswith("."):
                continue
            path = os.path.join(tickets, name)
            if name == mine:
                live.append(name)
                continue
            try:
                fd = _try_lock(path, create=False)
            except FileNotFoundError:
                continue
            if fd is None:
                live.append(name)
            else:  # nobody holds it: its waiter died
                with contextlib.suppress(OSError):
                    os.unlink(path)
                os.close(fd)
        return live

    def _ticket(self, folder: str) -> tuple[str, int]:
        counter = os.open(os.path.join(folder, "counter"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(counter, fcntl.LOCK_EX)
            number = int(os.pread(counter, 32, 0).strip() or b"0") + 1
            os.pwrite(counter, b"%020d\n" % number, 0)
        finally:
            os.close(counter)
        name = f"{number:020d}"
        tmp = os.path.join(folder, "tickets", f".{name}.{os.getpid()}")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, os.path.join(folder, "tickets", name))  # visible only once locked
        return name, fd

    async def acquire(self, group: str, limit: int, wait: float) -> FileSlot | None:
        folder = self._prepare(group)
        if not self._live_tickets(folder, None):
            fd = self._grab(folder, limit)
            if fd is not None:
                return FileSlot(fd, group)
        name, ticket_fd = self._ticket(folder)
        deadline = time.monotonic() + wait
        try:
            while True:
                live = self._live_tickets(folder, name)
                place = live.index(name)
                if place == 0:
                    fd = self._grab(folder, limit)
                    if fd is not None:
                        return FileSlot(fd, group)
                if time.monotonic() >= deadline:
                    return None
                if place == 0:
                    await asyncio.sleep(HEAD_POLL)
                else:
                    path = os.path.join(folder, "tickets", live[place - 1])
                    await _until_unlocked(path, deadline)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, "tickets", name))
            os.close(ticket_fd)

    def status(self) -> list[tuple[str, int, int]]:
        """(group, slots in use, live waiters) for every group seen on this host."""
        out: list[tuple[str, int, int]] = []
        top = os.path.join(self.root, "groups")
        if not os.path.isdir(top):
            return out
        for entry in sorted(os.listdir(top)):
            folder = os.path.join(top, entry)
            try:
                with open(os.path.join(folder, "name")) as f:
                    name = f.read().strip()
            except OSError:
                continue
            busy = 0
            for slot in sorted(os.listdir(folder)):
                if not slot.startswith("slot."):
                    continue
                fd = _try_lock(os.path.join(folder, slot))
                if fd is None:
                    busy += 1
                else:
                    os.close(fd)
            out.append((name, busy, len(self._live_tickets(folder, None))))
        return out
