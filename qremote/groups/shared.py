"""The shared backend: MX-group slots as leases in Redis, for a fleet of qmail hosts.

A slot is a member of a sorted set scored by its expiry (Redis's own clock, so the hosts'
clocks need not agree); a dead host's leases simply expire. A running delivery renews its
lease. Waiters queue in a second sorted set by ticket number and keep a heartbeat key
alive; only the oldest live waiter may take a freed slot, so nobody starves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from qremote.background import Background

LEASE_SECONDS = 60
"""How long a slot outlives a host that stopped renewing it (control/sharedlease)."""
HEARTBEAT_MS = 3_000
POLL_STEP = 0.005
"""Seconds between tries per waiter ahead of us: the next in line checks most often."""
POLL_MAX = 0.05

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
while true do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #head == 0 or head[1] == ARGV[3] then break end
  if redis.call('EXISTS', KEYS[3] .. head[1]) == 1 then break end
  redis.call('ZREM', KEYS[2], head[1])
end
local head = redis.call('ZRANGE', KEYS[2], 0, 0)
if #head > 0 and head[1] ~= ARGV[3] then
  local rank = redis.call('ZRANK', KEYS[2], ARGV[3])
  if rank then return -rank end
  return -1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 1
end
return 0
"""
"""1: granted; 0: first in line but the group is full; -n: n waiters ahead of us."""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
return 1
"""

_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}
"""


def _keys(group: str) -> tuple[str, str, str]:
    return (f"qremote:slots:{group}", f"qremote:waiters:{group}", "qremote:heartbeat:")


@dataclass
class SharedSlot:
    backend: SharedBackend
    group: str
    lease: str
    renewer: asyncio.Task | None = field(default=None)

    def release(self) -> None:
        if self.renewer is not None:
            self.renewer.cancel()
        self.backend.release_soon(self.group, self.lease)


class SharedBackend:
    name = "shared"

    def __init__(self, url: str, lease_seconds: int = LEASE_SECONDS) -> None:
        import redis.asyncio as aredis

        self.url = url
        self.lease_ms = max(lease_seconds, 1) * 1000
        self.client = aredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2, decode_responses=True
        )
        self._pending = Background()
        """Releases still on their way (a long-lived qremoted must not collect them all)."""

    async def _script(self, body: str, keys: list[str], args: list[Any]) -> Any:
        return await self.client.eval(body, len(keys), *keys, *args)

    async def acquire(self, group: str, limit: int, wait: float) -> SharedSlot | None:
        slots, waiters, beat = _keys(group)
        lease = f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(6)}"
        deadline = time.monotonic() + wait
        args = [limit, self.lease_ms, lease]
        if await self._script(_ACQUIRE, [slots, waiters, beat], args) == 1:
            return self._granted(group, lease)
        ticket = await self.client.incr(f"qremote:tickets:{group}")
        await self.client.set(beat + lease, "1", px=HEARTBEAT_MS)
        await self.client.zadd(waiters, {lease: ticket})
        ahead = 0
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(min(POLL_STEP * max(ahead, 1), POLL_MAX))
                await self.client.set(beat + lease, "1", px=HEARTBEAT_MS)
                answer = int(await self._script(_ACQUIRE, [slots, waiters, beat], args))
                if answer == 1:
                    return self._granted(group, lease)
                ahead = -answer
            return None
        finally:
            await self.client.zrem(waiters, lease)
            await self.client.delete(beat + lease)

    def _granted(self, group: str, lease: str) -> SharedSlot:
        slot = SharedSlot(self, group, lease)
        slot.renewer = asyncio.get_running_loop().create_task(self._renew(group, lease))
        return slot

    async def _renew(self, group: str, lease: str) -> None:
        slots, _, _ = _keys(group)
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            with contextlib.suppress(Exception):
                await self._script(_RENEW, [slots], [self.lease_ms, lease])

    def release_soon(self, group: str, lease: str) -> None:
        slots, _, _ = _keys(group)
        self._pending.start(self.client.zrem(slots, lease))

    async def close(self) -> None:
        await self._pending.wait()
        with contextlib.suppress(Exception):
            await self.client.aclose()

    async def status(self) -> list[tuple[str, int, int]]:
        out = []
        async for key in self.client.scan_iter(match="qremote:slots:*"):
            group = key[len("qremote:slots:") :]
            slots, waiters, _ = _keys(group)
            busy, waiting = await self._script(_COUNT, [slots, waiters], [])
            out.append((group, int(busy), int(waiting)))
        return sorted(out)
