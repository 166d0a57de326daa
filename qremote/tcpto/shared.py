"""tcpto shared by a fleet through Redis, with qmail's rules, beside qmail's own file.

qmail's file stays authoritative for qmail-tcpto and qmail-tcpok on each host; the Redis
copy lets one host's time-outs spare the others the same hour of waiting. One hash per
address (``qremote:tcpto:<ip>``: count, when), Redis's clock, kept for two hours (longer
than the longest skip window, 5824 seconds).
"""

from __future__ import annotations

from qremote.tcpto import table

_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1])
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '-1')
local when = tonumber(redis.call('HGET', KEYS[1], 'when') or '0')
if ARGV[1] == '0' then
  if count > 0 then redis.call('HSET', KEYS[1], 'count', 0) end
  return 0
end
if count > 0 and now < when + tonumber(ARGV[2]) then return 0 end
if count < 0 then count = 0 end
count = math.min(count + 1, tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'count', count, 'when', now)
redis.call('EXPIRE', KEYS[1], 7200)
return count
"""

_STATE = """
local t = redis.call('TIME')
return {tonumber(t[1]), tonumber(redis.call('HGET', KEYS[1], 'count') or '0'),
        tonumber(redis.call('HGET', KEYS[1], 'when') or '0')}
"""


class SharedTcpto:
    def __init__(self, client) -> None:
        self.client = client

    @staticmethod
    def key(ip: str) -> str:
        return f"qremote:tcpto:{ip}"

    async def skip(self, ip: str, pid: int) -> bool:
        now, count, when = await self.client.eval(_STATE, 1, self.key(ip))
        return int(count) >= 2 and int(now) - int(when) < table.window(pid)

    async def record(self, ip: str, timed_out: bool) -> None:
        await self.client.eval(
            _RECORD, 1, self.key(ip), "1" if timed_out else "0", table.ERROR_QUIET, table.MAX_COUNT
        )

    async def entries(self) -> list[tuple[str, int, int]]:
        """(ip, count, seconds ago) of every listed address."""
        out: list[tuple[str, int, int]] = []
        async for key in self.client.scan_iter(match="qremote:tcpto:*"):
            now, count, when = await self.client.eval(_STATE, 1, key)
            if int(count):
                out.append((key[len("qremote:tcpto:") :], int(count), int(now) - int(when)))
        return sorted(out)
