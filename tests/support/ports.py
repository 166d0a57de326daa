"""Waiting for a test server's port to accept connections."""

from __future__ import annotations

import socket
import time


def wait_for_port(ip: str, port: int, what: str, seconds: float = 10) -> None:
    """Return once something accepts TCP connections there; fail the test setup if not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start on {ip}:{port}")
