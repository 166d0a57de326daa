"""Asking a running verifying daemon who it is and how it does (``qremote check``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from qremote.unixsock import peer_credentials
from qremote.verify import wire

TIMEOUT = 5.0


@dataclass(frozen=True)
class Answer:
    pid: int
    uid: int
    """The daemon's user, from the kernel (SO_PEERCRED), not from its own words."""
    text: str


def ask(home: str) -> Answer | None:
    """The daemon's answer to ``S``; None when none answers on the home's socket."""
    path = os.path.join(home, wire.SOCKET_PATH)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            if len(path.encode()) > 107:  # a socket path's limit: go there first
                os.chdir(home)
                path = wire.SOCKET_PATH
            sock.connect(path)
            pid, uid = peer_credentials(sock)
            sock.sendall(wire.frame(wire.STATUS))
            reader = wire.reader()
            while True:
                data = sock.recv(1 << 16)
                if not data:
                    return None
                for kind, payload in reader.feed(data):
                    if kind == wire.TEXT:
                        return Answer(pid, uid, payload.decode("utf-8", "replace"))
                    return None
    except (OSError, ValueError):
        return None
