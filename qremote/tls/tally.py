"""Counts of authenticated TLS per MX group (DANE), for ``qremote status``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Tally:
    """In qremoted, for its whole life: what authenticated TLS did, group by group."""

    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """(MX group, method) to [authenticated, failed]."""

    def add(self, group: str, method: str, ok: bool) -> None:
        entry = self.counts.setdefault((group, method), [0, 0])
        entry[0 if ok else 1] += 1

    def lines(self) -> list[str]:
        return [
            f"{method} to {group}: {ok} authenticated, {failed} failed"
            for (group, method), (ok, failed) in sorted(self.counts.items())
        ]
