"""The tcpto table: qmail's record layout and rules, as pure functions.

``queue/lock/tcpto`` holds 64 records of 16 bytes: the IPv4 address in bytes 0-3, the
count of connect time-outs in byte 4 (capped at 10), and the time of the last one as a
little-endian 32-bit number in bytes 8-11. The same rules drive ``queue/lock/tcpto6``,
qremote's IPv6 companion: 64 records of 32 bytes, the address in bytes 0-15, the count
in byte 16 and the time in bytes 24-27 (the other bytes are zero).

Rules (qmail's tcpto.c):
- skip an address whose count is at least 2 while ``now - when`` is under
  ``(60 + (pid & 31)) << 6`` seconds (about an hour, spread over processes);
- a time-out increments the count and stamps the time, except that a time-out within
  120 seconds of the last one (count > 0) is ignored: parallel deliveries see one outage;
- a success or a refused connection resets the count of an address that is listed;
- a new address takes the first record with count 0, else the one with the smallest
  ``when + (count << 10)``.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

RECORDS = 64
MAX_COUNT = 10
ERROR_QUIET = 120


@dataclass(frozen=True)
class Layout:
    """Where the fields live in one record of a tcpto file."""

    size: int
    addr_len: int
    count_at: int
    when_at: int


IPV4 = Layout(size=16, addr_len=4, count_at=4, when_at=8)
IPV6 = Layout(size=32, addr_len=16, count_at=16, when_at=24)


def layout_for(ip: str) -> Layout:
    return IPV4 if len(packed(ip)) == 4 else IPV6


@functools.lru_cache(maxsize=4096)
def packed(ip: str) -> bytes:
    """The address in bytes; a delivery asks this several times of each address it tries,
    so the last 4096 parsed are kept (about 0.5 MB at most)."""
    return ipaddress.ip_address(ip).packed


@dataclass
class Record:
    addr: bytes
    count: int
    when: int

    def encode(self, layout: Layout) -> bytes:
        out = bytearray(layout.size)
        out[0 : layout.addr_len] = self.addr
        out[layout.count_at] = self.count & 0xFF
        out[layout.when_at : layout.when_at + 4] = (self.when & 0xFFFFFFFF).to_bytes(4, "little")
        return bytes(out)

    @classmethod
    def decode(cls, raw: bytes, layout: Layout) -> Record:
        return cls(
            addr=raw[0 : layout.addr_len],
            count=raw[layout.count_at],
            when=int.from_bytes(raw[layout.when_at : layout.when_at + 4], "little"),
        )


def records(data: bytes, layout: Layout) -> list[Record]:
    n = min(len(data) // layout.size, RECORDS)
    return [Record.decode(data[i * layout.size : (i + 1) * layout.size], layout) for i in range(n)]


def record_of(data: bytes, layout: Layout, addr: bytes) -> Record | None:
    """The record for ``addr`` in the raw table, or None: one slice comparison per record
    instead of decoding all of them (every delivery asks this of every address)."""
    n = min(len(data) // layout.size, RECORDS)
    for i in range(n):
        at = i * layout.size
        if data[at : at + layout.addr_len] == addr:
            return Record.decode(data[at : at + layout.size], layout)
    return None


def window(pid: int) -> int:
    """Seconds an address stays skipped after its second time-out, for this process."""
    return (60 + (pid & 31)) << 6


def should_skip(table: list[Record], addr: bytes, now: int, pid: int) -> bool:
    for rec in table:
        if rec.addr == addr:
            return rec.count >= 2 and now - rec.when < window(pid)
    return False


def find(table: list[Record], addr: bytes) -> int | None:
    for i, rec in enumerate(table):
        if rec.addr == addr:
            return i
    return None


def after_result(table: list[Record], addr: bytes, timed_out: bool, now: int) -> int | None:
    """Apply one connect result to ``table`` in place; the index of the changed record.

    None means nothing changes (so nothing needs writing).
    """
    i = find(table, addr)
    if i is not None:
        rec = table[i]
        if not timed_out:
            if rec.count == 0:
                return None
            rec.count = 0
            return i
        if rec.count > 0 and now < rec.when + ERROR_QUIET:
            return None
        rec.count = min(rec.count + 1, MAX_COUNT)
        rec.when = now
        return i
    if not timed_out or not table:
        return None
    slot = next((j for j, rec in enumerate(table) if rec.count == 0), None)
    if slot is None:
        slot = min(range(len(table)), key=lambda j: table[j].when + (table[j].count << 10))
    table[slot] = Record(addr, 1, now)
    return slot
