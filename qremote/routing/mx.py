"""Ordering MX answers and the ipme self-check (pure functions).

qmail sorts mail exchangers by preference, shuffles those of equal preference, then drops
every address whose preference is not better than the best preference at which this host
itself is listed (``prefme``): delivering there would loop back to us. If nothing is left,
it bounces with #5.4.6.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qremote.dane.tlsa import Dane


@dataclass(frozen=True)
class Target:
    """One address to try, with the MX host name it came from."""

    ip: str
    pref: int
    name: str
    dane: Dane | None = None
    """What DNSSEC-signed TLSA records say about this host (None: nothing secure)."""


ROUTE_PREF = 300000
"""qmail's prefme for smtproutes: a relay is never treated as "me"."""

NO_PREF = 100000


def order(exchangers: Iterable[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """Sort by preference, random order within one preference (RFC 5321 section 5.1)."""
    items = list(exchangers)
    rng.shuffle(items)
    return sorted(items, key=lambda item: item[0])


def prefme(targets: Iterable[Target], local: set[str]) -> int:
    """The best preference at which one of our own addresses is listed."""
    best = NO_PREF
    for t in targets:
        if t.ip in local and t.pref < best:
            best = t.pref
    return best


def usable(targets: list[Target], local: set[str], routed: bool) -> list[Target] | None:
    """Targets that are better than us, or None for qmail's #5.4.6 (we are the best MX)."""
    limit = ROUTE_PREF if routed else prefme(targets, local)
    chosen = [t for t in targets if t.pref < limit]
    if not chosen:
        return None
    return chosen
