"""Reading and writing the tcpto files under qmail's lock discipline.

qmail opens ``queue/lock/tcpto`` for writing, takes an exclusive flock, reads all records,
and rewrites only the record it changed. We do the same, so qmail-tcpto and qmail-tcpok
keep working on the file and a C qmail-remote can share it. qmail never creates the IPv4
file (its installer does, 1024 zero bytes); if it is missing, tcpto is off, as in qmail.
The IPv6 file is created on first use.

Any I/O error here is ignored, as qmail ignores it: tcpto is advice, never a reason to
fail a delivery.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass

from qremote import report
from qremote.tcpto import table


@dataclass(frozen=True)
class TcptoFiles:
    qmail_home: str

    def path(self, ip: str) -> str:
        name = "tcpto" if table.layout_for(ip) is table.IPV4 else "tcpto6"
        return os.path.join(self.qmail_home, "queue", "lock", name)

    def _open(self, ip: str) -> int | None:
        path = self.path(ip)
        layout = table.layout_for(ip)
        try:
            if layout is table.IPV4:
                return os.open(path, os.O_RDWR)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size < layout.size * table.RECORDS:
                os.ftruncate(fd, layout.size * table.RECORDS)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            os.close(fd)
            return None
        return fd

    def skip(self, ip: str, now: int | None = None, pid: int | None = None) -> bool:
        """True when qmail would not try this address now."""
        layout = table.layout_for(ip)
        fd = self._open(ip)
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            data = os.pread(fd, layout.size * table.RECORDS, 0)
        except OSError:
            return False
        finally:
            os.close(fd)
        found = table.record_of(data, layout, table.packed(ip))
        if found is None:
            return False
        return table.should_skip(
            [found],
            found.addr,
            int(time.time()) if now is None else now,
            os.getpid() if pid is None else pid,
        )

    def record(self, ip: str, timed_out: bool, now: int | None = None) -> None:
        """Note the result of one connect attempt."""
        layout = table.layout_for(ip)
        fd = self._open(ip)
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = os.pread(fd, layout.size * table.RECORDS, 0)
            addr = table.packed(ip)
            if not timed_out and table.record_of(data, layout, addr) is None:
                return  # a success for an address with no record: nothing to write
            recs = table.records(data, layout)
            stamp = int(time.time()) if now is None else now
            changed = table.after_result(recs, addr, timed_out, stamp)
            if changed is not None:
                os.pwrite(fd, recs[changed].encode(layout), changed * layout.size)
        except OSError:
            pass
        finally:
            os.close(fd)


class Tcpto:
    """qmail's files, plus the fleet's shared copy when there is one.

    An address is skipped if either says so; every result is written to both. Trouble
    with the shared copy is noted once and otherwise ignored: tcpto is advice.
    """

    def __init__(self, files: TcptoFiles, shared=None) -> None:
        self.files = files
        self.shared = shared
        self.notes: list[str] = []

    def _trouble(self, e: Exception) -> None:
        if not self.notes:
            self.notes.append(report.note_tcpto_unavailable(e.__class__.__name__))
        self.shared = None

    async def skip(self, ip: str) -> bool:
        if self.files.skip(ip):
            return True
        if self.shared is not None:
            try:
                return await self.shared.skip(ip, os.getpid())
            except Exception as e:  # noqa: BLE001 - advice only
                self._trouble(e)
        return False

    async def record(self, ip: str, timed_out: bool) -> None:
        self.files.record(ip, timed_out)
        if self.shared is not None:
            try:
                await self.shared.record(ip, timed_out)
            except Exception as e:  # noqa: BLE001 - advice only
                self._trouble(e)
