"""The verifying daemon's memory of key records, as long as their TTLs allow.

Mail from one sender arrives in runs, each message signed with the same selector: one
look-up serves them all. Answers are kept for their TTL (a missing record for the
negative TTL of RFC 2308: the SOA's own TTL or its minimum, whichever is less), capped
at :data:`MAX_TTL`; temporary failures are never kept. The cache is bounded in bytes,
not entries: a record over :data:`MAX_RECORD` bytes (no key is) is not kept at all, and
past :data:`MAX_BYTES` the oldest entries go first. Worker threads share it, so it takes
a lock; nothing is held under the lock but a dictionary operation.
"""

from __future__ import annotations

import threading
import time

MAX_TTL = 3600
"""Seconds an answer is kept at most, whatever its TTL: a key withdrawn after a breach
must stop passing within the hour."""
MAX_RECORD = 8192
"""Bytes of one record kept at most: a 4096-bit RSA key is about 800."""
MAX_BYTES = 8 << 20
"""Bytes of records kept in all: some ten thousand keys."""


class KeyCache:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, bytes | None]] = {}
        self._bytes = 0
        self._max = max_bytes
        self.hits = 0
        self.misses = 0

    def get(self, name: str) -> tuple[bool, bytes | None]:
        """(known, record): known is False when the name must be looked up."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry[0] <= now:
                if entry is not None:
                    self._drop(name)
                self.misses += 1
                return False, None
            self.hits += 1
            return True, entry[1]

    def put(self, name: str, record: bytes | None, ttl: float) -> None:
        size = len(record or b"") + len(name)
        if ttl <= 0 or size > MAX_RECORD:
            return
        expires = time.monotonic() + min(ttl, MAX_TTL)
        with self._lock:
            if name in self._entries:
                self._drop(name)
            while self._entries and self._bytes + size > self._max:
                self._drop(next(iter(self._entries)))  # the oldest
            self._entries[name] = (expires, record)
            self._bytes += size

    def _drop(self, name: str) -> None:
        _, record = self._entries.pop(name)
        self._bytes -= len(record or b"") + len(name)

    def __len__(self) -> int:
        return len(self._entries)
