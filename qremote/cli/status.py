"""``qremote status``: MX-group slots and waiters (local and shared), tcpto entries in
qmail-tcpto's own words, MTA-STS policies, shaping's suspensions and lowered rates, and
qremoted's in-flight deliveries and cached connections."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time

from qremote.control import ControlDir
from qremote.daemon import client
from qremote.groups.filelocks import FileBackend
from qremote.mtasts.store import PolicyStore
from qremote.report import one_line
from qremote.shaping import rates
from qremote.shaping.shared import SharedStore
from qremote.shaping.state import PathState, Store
from qremote.tcpto import table
from qremote.tlsrpt.record import day_of, folder


def tcpto_lines(home: str, now: int | None = None) -> list[str]:
    """One line per listed address, as qmail-tcpto prints them."""
    stamp = int(time.time()) if now is None else now
    out = []
    for name, layout in (("tcpto", table.IPV4), ("tcpto6", table.IPV6)):
        try:
            with open(os.path.join(home, "queue", "lock", name), "rb") as f:
                data = f.read()
        except OSError:
            continue
        for rec in table.records(data, layout):
            if not rec.count:
                continue
            ip = ipaddress.ip_address(rec.addr)
            out.append(
                f"{ip} timed out {max(stamp - rec.when, 0)} seconds ago; "
                f"# recent timeouts: {rec.count}"
            )
    return out


def _group_lines(rows: list[tuple[str, int, int]]) -> list[str]:
    if not rows:
        return ["  (no deliveries holding or waiting)"]
    width = max(len(r[0]) for r in rows)
    return [
        f"  {name:<{width}}  in use {busy:>4}  waiting {waiting:>4}" for name, busy, waiting in rows
    ]


async def _shared(url: str) -> list[str]:
    try:
        # start-up: redis-py only when control/sharedstate names Redis
        from qremote.groups.shared import SharedBackend
        from qremote.tcpto.shared import SharedTcpto

        backend = SharedBackend(url)
    except Exception as e:  # noqa: BLE001 - status must answer even without redis-py
        return [f"  unusable: redis-py cannot be loaded ({e.__class__.__name__}: {e})"]
    try:
        lines = _group_lines(await backend.status())
        lines.append(f"tcpto, shared ({url}):")
        entries = await SharedTcpto(backend.client).entries()
        lines += [
            f"  {ip} timed out {ago} seconds ago; # recent timeouts: {count}"
            for ip, count, ago in entries
        ] or ["  (no address is being avoided)"]
        return lines
    except Exception as e:  # noqa: BLE001 - status must answer even when Redis does not
        return [f"  unreachable: {e.__class__.__name__}: {e}"]
    finally:
        await backend.close()


def sts_lines(home: str, now: float | None = None) -> list[str]:
    """The MTA-STS policies remembered on disk, and the sessions recorded today for the
    TLS reports (successes and failures per policy domain)."""
    import json

    moment = time.time() if now is None else now
    store = PolicyStore(home)
    lines = [f"MTA-STS policies ({store.folder}):"]
    for domain, entry in store.domains():
        left = entry.expires - moment
        state = f"expires in {left / 86400:.1f} days" if left > 0 else "expired"
        lines.append(f"  {domain}: {entry.policy.mode}, id {entry.policy_id}, {state}")
    if len(lines) == 1:
        lines.append("  (none)")
    day = day_of(moment)
    counts: dict[str, list[int]] = {}
    try:
        with open(os.path.join(folder(home), day + ".log"), "rb") as f:
            for raw in f:
                try:
                    entry = json.loads(raw)
                    pair = counts.setdefault(f"{entry['domain']} ({entry['type']})", [0, 0])
                    pair[1 if entry.get("result") else 0] += 1
                except (ValueError, KeyError, TypeError):
                    continue
    except OSError:
        pass
    lines.append(f"TLS report sessions today ({day}, UTC):")
    lines.extend(f"  {k}: {ok} successful, {bad} failed" for k, (ok, bad) in sorted(counts.items()))
    if not counts:
        lines.append("  (none)")
    return lines


def shaping_lines(home: str, now: float | None = None) -> list[str]:
    """Active suspensions and lowered rates (control/shaping.toml's automation), with the
    words that set them off, when they started and when they end: this host's, and the
    fleet's when control/sharedstate names Redis."""
    now = time.time() if now is None else now
    lines = ["Shaping, local (qremote/shaping/):"]
    lines += _path_lines(list(Store(home).all()), now)
    url = (ControlDir(os.path.join(home, "control")).line("sharedstate") or "").strip()
    if url:
        lines.append(f"Shaping, shared ({url}):")
        lines += asyncio.run(_shared_shaping(url, now))
    return lines


def _path_lines(states: list[PathState], now: float) -> list[str]:
    lines = []
    for state in states:
        s, low = state.suspended, state.lowered
        if s is not None and now < s.until:
            lines.append(
                f"  {state.group} from {state.source}: suspended since {_utc(s.since)} until "
                f"{_utc(s.until)}; it said: {one_line(s.text)}"
            )
        last_step = rates.RECOVERY_STEP * rates.RECOVERY_STEPS_UNLIMITED
        if low is not None and now < low.until + last_step:
            stepped = rates.current(None, low, now) if now >= low.until else None
            step = f", now {stepped.text}" if stepped is not None else ""
            lines.append(
                f"  {state.group} from {state.source}: held to {low.rate.text} since "
                f"{_utc(low.since)} until {_utc(low.until)}, then back in steps{step}; "
                f"it said: {one_line(low.text)}"
            )
    return lines or ["  (no path is suspended or slowed)"]


async def _shared_shaping(url: str, now: float) -> list[str]:
    try:
        # start-up: redis-py only when control/sharedstate names Redis
        from qremote.groups.shared import SharedBackend

        backend = SharedBackend(url)
    except Exception as e:  # noqa: BLE001 - status must answer even without redis-py
        return [f"  unusable: redis-py cannot be loaded ({e.__class__.__name__}: {e})"]
    try:
        return _path_lines(await SharedStore(backend.client).all(), now)
    except Exception as e:  # noqa: BLE001 - status must answer even when Redis does not
        return [f"  unreachable: {e.__class__.__name__}: {e}"]
    finally:
        await backend.close()


async def resume_shaping(home: str, group: str) -> int:
    """``qremote shaping resume GROUP``: this host's paths of the group, and the fleet's
    when control/sharedstate names Redis (which must then answer)."""
    lifted = Store(home).resume(group)
    url = (ControlDir(os.path.join(home, "control")).line("sharedstate") or "").strip()
    if url:
        # start-up: redis-py only when control/sharedstate names Redis
        from qremote.groups.shared import SharedBackend

        backend = SharedBackend(url)
        try:
            lifted += await SharedStore(backend.client).resume(group)
        finally:
            await backend.close()
    return lifted


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def text(home: str) -> str:
    control = ControlDir(os.path.join(home, "control"))
    local = FileBackend(os.path.join(home, "qremote"))
    lines = [f"MX groups, local ({local.root}):", *_group_lines(local.status())]
    url = (control.line("sharedstate") or "").strip()
    if url:
        lines.append(f"MX groups, shared ({url}):")
        lines.extend(asyncio.run(_shared(url)))
    entries = tcpto_lines(home)
    lines.append("tcpto (queue/lock/tcpto, queue/lock/tcpto6):")
    lines.extend(f"  {e}" for e in entries or ["(no address is being avoided)"])
    lines.extend(sts_lines(home))
    lines.extend(shaping_lines(home))
    lines.append("qremoted (qremote/qremoted.sock):")
    said = client.status(home)
    if said is None:
        lines.append("  not running: qmail-remote delivers in-process")
    else:
        lines.extend(f"  {line}" for line in said.splitlines())
    return "\n".join(lines)
