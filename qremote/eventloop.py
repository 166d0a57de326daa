"""The event loop qremote's long-lived daemons run on: uvloop's where it is installed
(a runtime dependency), else asyncio's own.

uvloop runs the same asyncio code on libuv: its loop iteration, socket calls and timers
cost less CPU, which is most of what qremoted spends per delivery beside the two RSA
signatures (bench/daemonloop.py and bench/drain.py measure both loops). The
one-delivery paths (``qmail-remote`` in-process, ``qremote check``) keep asyncio's
loop: importing uvloop would cost a short process more start-up than it saves.
``QREMOTE_EVENT_LOOP=asyncio`` in a daemon's environment chooses asyncio's loop even
where uvloop is installed (to tell a fault of one loop from the other's).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CHOICE = "QREMOTE_EVENT_LOOP"
"""The environment variable naming the loop: ``uvloop`` (the default) or ``asyncio``."""


def factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes a daemon's loop: uvloop's, or None for asyncio's own."""
    if os.environ.get(CHOICE, "uvloop") == "asyncio":
        return None
    try:
        import uvloop  # start-up: only the daemons run on it
    except ImportError:
        return None
    return uvloop.new_event_loop


def name() -> str:
    """The loop a daemon runs on, as its start-up line says it."""
    return "asyncio" if factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a daemon's main coroutine to its end, as asyncio.run does."""
    with asyncio.Runner(loop_factory=factory()) as runner:
        return runner.run(main)
