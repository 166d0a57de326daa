"""Tasks started and not awaited where they start: kept until done, awaited on close.

asyncio holds only weak references to running tasks, so a task nobody keeps may vanish
half done; and a long-lived qremoted must not keep the finished ones. Closing an idle
connection, returning a Redis lease and retiring a settings generation's pool all go
through this one small set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def _awaited(work: Awaitable[Any]) -> Any:
    """create_task wants a coroutine; redis-py's commands are awaitables."""
    return await work


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, work: Awaitable[Any]) -> None:
        task = asyncio.get_running_loop().create_task(_awaited(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self) -> None:
        """Until every task has ended; their failures are theirs (closing paths)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
