"""Shaping shared by a fleet (``control/sharedstate``): the rates, suspensions and lowered
rates of every path kept in Redis, so a suspension one host learns holds for all and
two hosts sending to one limited group together stay within its rate.

A rate is GCRA in one Lua script on Redis's own clock (``TIME``), so hosts whose clocks
differ still space their messages right: the script reads the path's theoretical arrival
time, decides, and stores the new one atomically, with an expiry so idle paths vanish.
What automation sets is the same JSON as the local ``state.json``, under one key per
path, changed under a short lock (``SET NX PX``): changes are rare (a failed delivery
whose words matched), and two hosts learning the same thing at once lose nothing that
matters. Any Redis trouble is the caller's to catch: it then shapes with the local files
and says so, as the MX-group caps do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from qremote.limits import SHAPING_STATE_BYTES
from qremote.shaping.config import Rate
from qremote.shaping.rates import RECOVERY_STEP, RECOVERY_STEPS_UNLIMITED, Admitted, Refused
from qremote.shaping.state import PathState

PREFIX = "qremote:shaping:"

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local at = math.max(tat, now)
local wait = at - now
if wait > tonumber(ARGV[2]) then return {0, wait} end
local new = at + tonumber(ARGV[1]) * tonumber(ARGV[3])
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.floor((new - now) / 1000) + 1000)
return {1, wait}
"""
"""Reserve ARGV[3] turns ARGV[1] µs apart: {1, µs to wait for the first} when reserved;
{0, µs until the path frees} when not. Microseconds: a rate of thousands a second has an
interval well under a millisecond."""

BATCH_SECONDS = 0.1
"""A process reserves the turns of this long at once when its rate gives several in it,
and hands them to its own deliveries: a high rate then costs one Redis round trip per
batch, not per message. A turn left unused is lost (the fleet sends a little less, never
more), and one older than :data:`TURN_LATE` is not used (no bunching)."""
BATCH_MAX = 50
TURN_LATE = 0.1

STATE_SECONDS = 1.0
"""What automation set on a path is read from Redis at most once a second per process: a
suspension another host learns reaches this one within a second."""

CACHED_PATHS = 10_000
"""Paths a process remembers turns and states for; past it, it forgets them all."""

_turns: dict[str, list[float]] = {}
"""Turns reserved by this process and not yet used, by path key (wall-clock times)."""
_states: dict[str, tuple[float, PathState]] = {}
"""A path's state as last read, and until when (monotonic) it stands."""

KEEP_AFTER = RECOVERY_STEP * RECOVERY_STEPS_UNLIMITED + 86400
"""Seconds a path's state outlives its last end: a lowered rate's steps back, and a day
for the matches a threshold counts."""

LOCK_MS = 2000
"""How long a path's lock may be held by a host that died holding it."""


def _key(kind: str, group: str, source: str) -> str:
    return f"{PREFIX}{kind}:{group} {source}"


class SharedStore:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._reserve = client.register_script(_RESERVE)
        """Sent once, then called by its digest (EVALSHA)."""

    async def reserve(
        self, group: str, source: str, rate: Rate, max_wait: float
    ) -> Admitted | Refused:
        """The next turn: one this process reserved already, else a new batch."""
        key = _key("tat", group, source)
        now = time.time()
        mine = _turns.get(key)
        while mine:
            turn = mine.pop(0)
            if turn >= now - TURN_LATE:
                return Admitted(0.0, max(0.0, turn - now))
        batch = max(1, min(BATCH_MAX, int(BATCH_SECONDS / rate.interval)))
        interval_us = max(1, round(rate.interval * 1e6))
        args = [interval_us, int(max_wait * 1e6), batch]
        ok, us = await self._reserve(keys=[key], args=args)
        if int(ok) != 1:
            return Refused(int(us) / 1e6)
        first = now + int(us) / 1e6
        if batch > 1:
            if len(_turns) > CACHED_PATHS:
                _turns.clear()
            _turns[key] = [first + i * rate.interval for i in range(1, batch)]
        return Admitted(0.0, int(us) / 1e6)

    async def read(self, group: str, source: str) -> PathState:
        key = _key("state", group, source)
        cached = _states.get(key)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        data = await self.client.get(key)
        if not data or len(data) > SHAPING_STATE_BYTES:
            state = PathState(group, source)
        else:
            state = PathState.from_json(data.encode(), group, source)
        if len(_states) > CACHED_PATHS:
            _states.clear()
        _states[key] = (time.monotonic() + STATE_SECONDS, state)
        return state

    async def update(
        self, group: str, source: str, change: Callable[[PathState], PathState]
    ) -> PathState | None:
        """None when another host held the path's lock for a second (it is writing the
        same kind of news)."""
        lock = _key("lock", group, source)
        for _ in range(20):
            if await self.client.set(lock, "1", nx=True, px=LOCK_MS):
                break
            await asyncio.sleep(0.05)
        else:
            return None
        try:
            key = _key("state", group, source)
            _states.pop(key, None)  # under the lock, the news is read fresh
            state = change(await self.read(group, source))
            _states.pop(key, None)
            if state.empty:
                await self.client.delete(key)
            else:
                ends = [s.until for s in (state.suspended, state.lowered) if s is not None]
                keep = max([*ends, time.time()]) - time.time() + KEEP_AFTER
                await self.client.set(key, state.to_json().decode(), ex=int(keep))
            return state
        finally:
            await self.client.delete(lock)

    async def all(self) -> list[PathState]:
        out = []
        async for key in self.client.scan_iter(match=f"{PREFIX}state:*"):
            data = await self.client.get(key)
            if not data or len(data) > SHAPING_STATE_BYTES:
                continue
            state = PathState.stored(data.encode())
            if state is not None:
                out.append(state)
        return sorted(out, key=lambda s: (s.group, s.source))

    async def resume(self, group: str) -> int:
        lifted = 0
        for state in await self.all():
            if state.group != group or (state.suspended is None and state.lowered is None):
                continue

            def clear(s: PathState) -> PathState:
                s.suspended = s.lowered = None
                return s

            if await self.update(state.group, state.source, clear) is not None:
                lifted += 1
        return lifted
