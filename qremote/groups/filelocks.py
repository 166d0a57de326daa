"""The embedded backend: MX-group slots counted in a file per group under
``$QMAILHOME/qremote/groups/``, shared by every qremote process on the host.

A group's ``count`` file holds, per holding process, how many slots it holds. Taking or
returning a slot is one flock of that file, one read and one write: O(1) in the number of
slots in use (probing one lock file per slot, as before, was O(n) per delivery and O(n²)
at a thousand in flight).

A slot is never held by a dead process: every holding process keeps a *holder file*
(``groups/.holders/<pid>-<random>``) locked for its whole life, and the kernel drops that
lock however the process dies. When a group looks full, the counts of holders whose file
is no longer locked are removed before the answer is given, so a dead process's slots
are free the moment someone needs them (and ``qremote status`` sweeps the same way).

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
"""Only the oldest waiter polls the count; the others sleep on their predecessor's lock."""

_END = b"end\n"
"""The count file's last line: what follows it (a write cut short) is not read."""


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


class _Holders:
    """This process's holder file per state folder, locked for the process's life (made
    again after a fork: a child is a holder of its own)."""

    def __init__(self) -> None:
        self.pid = 0
        self.names: dict[str, str] = {}
        self.fds: list[int] = []

    def name_in(self, root: str) -> str:
        if self.pid != os.getpid():
            # A forked child: its copies of the parent's holder files would keep the
            # parent's locks (and so its slots) alive after the parent died.
            for fd in self.fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.pid, self.names, self.fds = os.getpid(), {}, []
        name = self.names.get(root)
        if name is None:
            folder = os.path.join(root, "groups", ".holders")
            os.makedirs(folder, exist_ok=True)
            name = f"{os.getpid()}-{os.urandom(6).hex()}"
            fd = os.open(os.path.join(folder, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.names[root] = name
            self.fds.append(fd)
        return name

    def known(self, root: str) -> str:
        """This process's holder name in ``root`` if it has one, else ''."""
        return self.names.get(root, "") if self.pid == os.getpid() else ""


_HOLDERS = _Holders()

_PREPARED: set[str] = set()
"""Group folders this process has made (or found) already: not looked at again."""


def _parse(data: bytes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in data.split(b"\n"):
        if line + b"\n" == _END:
            break
        name, _, number = line.decode("ascii", "replace").partition(" ")
        if name and number.isdigit() and "/" not in name:
            counts[name] = counts.get(name, 0) + int(number)
    return counts


class _Count:
    """A group's count file, locked while it is read and written."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.fd = os.open(
            os.path.join(folder, "count"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )

    def __enter__(self) -> dict[str, int]:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.counts = _parse(os.pread(self.fd, 1 << 20, 0))
        except OSError:
            os.close(self.fd)
            raise
        self.before = dict(self.counts)
        return self.counts

    def __exit__(self, *exc: object) -> None:
        try:
            if self.counts != self.before:
                data = b"".join(f"{k} {v}\n".encode() for k, v in self.counts.items() if v > 0)
                os.pwrite(self.fd, data + _END, 0)
                os.ftruncate(self.fd, len(data) + len(_END))
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def _sweep(root: str, counts: dict[str, int], mine: str) -> None:
    """Remove the counts of holders that died (their holder file is no longer locked)."""
    holders = os.path.join(root, "groups", ".holders")
    for name in list(counts):
        if name == mine:
            continue
        path = os.path.join(holders, name)
        try:
            fd = _try_lock(path, create=False)
        except FileNotFoundError:
            del counts[name]
            continue
        if fd is not None:  # nobody holds it: its process is gone
            del counts[name]
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)


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
    folder: str
    holder: str
    group: str
    released: bool = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        with contextlib.suppress(OSError), _Count(self.folder) as counts:
            if counts.get(self.holder, 0) > 0:
                counts[self.holder] -= 1


class FileBackend:
    """Slots held by flock; ``root`` is ``$QMAILHOME/qremote``."""

    name = "local"

    def __init__(self, root: str) -> None:
        self.root = root

    def _prepare(self, group: str) -> str:
        folder = group_dir(self.root, group)
        if folder in _PREPARED:
            return folder
        os.makedirs(os.path.join(folder, "tickets"), exist_ok=True)
        label = os.path.join(folder, "name")
        if not os.path.exists(label):
            tmp = f"{label}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(group + "\n")
            os.rename(tmp, label)
        _PREPARED.add(folder)
        return folder

    def _grab(self, folder: str, limit: int, group: str) -> FileSlot | None:
        """One slot if the group has one free: O(1) but when the group looks full, when
        the holders in its count (processes, not slots) are checked for life."""
        mine = _HOLDERS.name_in(self.root)
        try:
            count = _Count(folder)
        except FileNotFoundError:
            _PREPARED.discard(folder)  # removed under us: made again by the next delivery
            raise
        with count as counts:
            if sum(counts.values()) >= limit:
                _sweep(self.root, counts, mine)
            if sum(counts.values()) >= limit:
                return None
            counts[mine] = counts.get(mine, 0) + 1
        return FileSlot(folder, mine, group)

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
            slot = self._grab(folder, limit, group)
            if slot is not None:
                return slot
        name, ticket_fd = self._ticket(folder)
        deadline = time.monotonic() + wait
        try:
            while True:
                live = self._live_tickets(folder, name)
                place = live.index(name)
                if place == 0:
                    slot = self._grab(folder, limit, group)
                    if slot is not None:
                        return slot
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
            try:
                with _Count(folder) as counts:
                    _sweep(self.root, counts, _HOLDERS.known(self.root))
                    busy = sum(counts.values())
            except OSError:
                continue
            out.append((name, busy, len(self._live_tickets(folder, None))))
        return out
