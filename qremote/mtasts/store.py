"""Where MTA-STS policies are remembered: in memory (qremoted, for its life) and on disk
under ``$QMAILHOME/qremote/mta-sts/`` (across restarts, shared by every process).

MTA-STS protects only if a policy, once seen, is remembered until it expires (trust on
first use, RFC 8461 section 5.1): a DNS or HTTPS failure later, or an attacker blocking
them, must not turn a remembered policy into "no policy". Files are written atomically,
so many standalone qmail-remote processes and qremoted can share them; the last writer
wins, and every writer writes a policy it has just fetched.

A failed fetch is remembered too, in memory and in ``mta-sts/.failed/<domain>``, whether
or not a policy was remembered before: no process fetches that domain's policy again
for :data:`~qremote.limits.STS_RETRY_AFTER` seconds, so a policy server that does not
answer costs one fetch time-out per domain per window, not one per delivery.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass

from qremote.atomic import write_file
from qremote.limits import STS_RETRY_AFTER
from qremote.mtasts.policy import StsError, StsPolicy, parse_policy

_NAME = re.compile(r"[a-z0-9_.-]{1,253}")


@dataclass(frozen=True)
class Entry:
    policy_id: str
    policy: StsPolicy
    fetched: float
    """When it was fetched (seconds since the epoch)."""

    @property
    def expires(self) -> float:
        return self.fetched + self.policy.max_age


class PolicyStore:
    def __init__(self, home: str) -> None:
        self.folder = os.path.join(home, "qremote", "mta-sts")
        self.memory: dict[str, Entry] = {}
        self.inflight: dict[str, asyncio.Task[object]] = {}
        """One policy lookup per domain at a time (qremoted): the others wait for it."""
        self.failed: dict[str, tuple[float, str]] = {}
        """Domains whose policy could not be fetched, when and why (also on disk)."""

    def _path(self, domain: str) -> str | None:
        name = domain.lower().rstrip(".")
        if not _NAME.fullmatch(name) or name.startswith("."):
            return None
        return os.path.join(self.folder, name)

    def get(self, domain: str, now: float) -> Entry | None:
        """The remembered policy, unless it expired."""
        entry = self.memory.get(domain) or self._read(domain)
        if entry is None or entry.expires <= now:
            return None
        self.memory[domain] = entry
        return entry

    def _read(self, domain: str) -> Entry | None:
        path = self._path(domain)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read(256 * 1024))
            return Entry(
                str(data["id"]),
                parse_policy(str(data["policy"])),
                float(data["fetched"]),
            )
        except (OSError, ValueError, KeyError, TypeError, StsError):
            return None  # none yet, or not ours to read: fetched again

    def put(self, domain: str, entry: Entry) -> str | None:
        """Remember ``entry``; the reason when the disk would not take it (the policy is
        then remembered by this process only, and ``qremote check`` says why)."""
        self.memory[domain] = entry
        path = self._path(domain)
        if path is None:
            return None
        data = {
            "id": entry.policy_id,
            "policy": entry.policy.text,
            "fetched": entry.fetched,
        }
        try:
            os.makedirs(self.folder, exist_ok=True)
            write_file(path, json.dumps(data).encode(), 0o644)
        except OSError as e:
            return f"{self.folder}: {e.strerror}"
        return None

    def _failure_path(self, domain: str) -> str | None:
        path = self._path(domain)
        return None if path is None else os.path.join(self.folder, ".failed", domain)

    def failure(self, domain: str, now: float) -> str | None:
        """Why the last fetch failed, if it failed less than STS_RETRY_AFTER ago (in
        this process or any other); None: fetch."""
        known = self.failed.get(domain)
        if known is None:
            path = self._failure_path(domain)
            if path is None:
                return None
            try:
                with open(path, "rb") as f:
                    data = json.loads(f.read(4096))
                known = (float(data["when"]), str(data["why"])[:500])
            except (OSError, ValueError, KeyError, TypeError):
                return None
            self.failed[domain] = known
        when, why = known
        if not 0 <= now - when < STS_RETRY_AFTER:
            return None
        return why

    def fetch_failed(self, domain: str, now: float, why: str) -> None:
        """Remember a failed fetch (best effort on disk: memory holds it regardless)."""
        self.failed[domain] = (now, why)
        path = self._failure_path(domain)
        if path is None:
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_file(path, json.dumps({"when": now, "why": why}).encode(), 0o644)
        except OSError:
            pass  # remembered by this process only; check names an unwritable folder

    def fetched(self, domain: str) -> None:
        """A fetch worked: forget an earlier failure."""
        self.failed.pop(domain, None)
        path = self._failure_path(domain)
        if path is not None:
            try:
                os.unlink(path)
            except OSError:
                pass

    def domains(self) -> list[tuple[str, Entry]]:
        """Every policy on disk, for ``qremote status``."""
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return []
        found = []
        for name in names:
            if name.startswith("."):
                continue
            entry = self._read(name)
            if entry is not None:
                found.append((name, entry))
        return found
