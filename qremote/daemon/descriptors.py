"""How many deliveries qremoted can hold open at once, by its descriptor limit.

A delivery in qremoted holds three descriptors at most (the client's socket, the SMTP
connection, a DNS socket for a moment; the queue file is closed as soon as it is read, and
an MX-group slot holds none), a client waiting for its turn two (its socket and its queue
file). The usual soft limit of 1024 leaves room for about 300, so qremoted raises its soft
limit to the hard one at start (as far as the kernel's hard limit allows; the service
files set a high hard limit) and admits no more clients than the limit has room for: the
rest wait in the listening socket's backlog, and then in connect(), which is where they
queue.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

PER_CLIENT = 3
"""Descriptors one client costs at most while its delivery runs."""
RESERVE = 100
"""Descriptors kept for the daemon itself: logs, locks, control files, key files, Redis."""


@dataclass(frozen=True)
class Room:
    soft: int
    hard: int
    clients: int
    """Clients admitted at once (waiting or delivering)."""
    raised_from: int | None = None
    """The soft limit before qremoted raised it (None: it was already the hard one)."""


def room_for(soft: int) -> int:
    return max((soft - RESERVE) // PER_CLIENT, 1)


def raise_limit() -> Room:
    """Raise the soft descriptor limit to the hard one; the room that gives."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return Room(soft, hard, room_for(soft), before if soft != before else None)


def needed_for(concurrency: int) -> int:
    """The soft limit qremoted needs to take ``concurrency`` deliveries at once."""
    return concurrency * PER_CLIENT + RESERVE
