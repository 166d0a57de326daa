"""Workers asking each other for an MX-group slot that an idle kept connection holds.

A kept connection holds its MX group's slot while it waits for the next message, and only
the worker that kept it can close it. Within one process a delivery that finds its group
full closes one of the group's idle connections itself (:mod:`qremote.delivery.slot`);
with ``--workers`` the idle connections may all be another worker's, and the delivery
would wait out ``mxgroupwait`` for slots nobody is using. So a delivery that finds its
group full and has no idle connection of its own there tells its siblings the group's
name; a sibling keeping an idle connection of that group closes its longest-idle one, and
the freed slot goes to the oldest waiter (the tickets of :mod:`qremote.groups.filelocks`).

The request goes round the siblings one at a time: the next worker after the asking one
closes an idle connection of the group if it keeps one, else passes the request on to the
next, until one has closed a connection or every sibling was asked. So a waiter costs at
most one idle connection however many workers there are, and the ones with nothing to
close pass it on in one datagram each. The channels are datagram socket pairs the master
makes before it forks: a worker started again reads the channel of the one it replaces,
and nothing is named in the file system. Nothing is waited for: a datagram to a worker too
busy to read its channel is dropped when the channel is full (the waiter still gets a slot
when one frees, as before).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

NAME_MAX = 65_536
"""Bytes of a group name carried (an unnamed group is named by its MX hosts, bounded by
the MX answer's bounds); a longer name is not sent, a longer datagram not read whole."""


class Siblings:
    """The master's channels to its workers; in a worker, its own number among them."""

    def __init__(self, count: int) -> None:
        self.channels = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(count)]
        for inbox, outbox in self.channels:
            inbox.setblocking(False)
            outbox.setblocking(False)
        self.index: int | None = None
        """This worker's number (None in the master)."""

    def want(self, group: str) -> bool:
        """Ask the siblings, one after the other, to close an idle connection of ``group``
        (a delivery here waits for one of its slots); False when the request could not be
        sent (a hint, never a promise: the waiter waits as it would without it)."""
        assert self.index is not None
        name = group.encode("utf-8", "replace")
        if len(self.channels) < 2 or len(name) > NAME_MAX:
            return False
        return self._pass(self.index, 0, name)

    def _pass(self, origin: int, asked: int, name: bytes) -> bool:
        """Send the request to the next worker after this one that is not ``origin``."""
        assert self.index is not None
        count = len(self.channels)
        number = (self.index + 1) % count
        if number == origin:
            number = (number + 1) % count
        try:
            self.channels[number][1].send(b"%d %d %s" % (origin, asked, name))
        except OSError:
            return False
        return True

    def listen(self, index: int, free_one: Callable[[str], bool]) -> None:
        """In worker ``index``: for each request, ``free_one(group)`` closes an idle
        connection of the group if this worker keeps one (True), else the request goes on
        to the next sibling not yet asked. Called from the event loop, as every pool
        method must be."""
        self.index = index
        inbox = self.channels[index][0]

        def read() -> None:
            while True:
                try:
                    data = inbox.recv(NAME_MAX + 32)
                except OSError:  # nothing more to read just now (or a broken channel)
                    return
                origin, asked, name = _parsed(data)
                if origin is None or origin == index:
                    continue
                if free_one(name.decode("utf-8", "replace")):
                    continue
                if asked + 1 < len(self.channels) - 1:
                    self._pass(origin, asked + 1, name)

        asyncio.get_running_loop().add_reader(inbox.fileno(), read)


def _parsed(data: bytes) -> tuple[int | None, int, bytes]:
    """(asking worker, siblings asked before this one, group name); None for a broken
    request."""
    parts = data.split(b" ", 2)
    if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None, 0, b""
    return int(parts[0]), int(parts[1]), parts[2]
