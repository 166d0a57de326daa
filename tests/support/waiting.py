"""Waiting in tests for something another process or thread does."""

from __future__ import annotations

import time


def wait_until(condition, timeout: float = 20) -> None:
    """Return once ``condition()`` is true; fail the test if it is not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)
