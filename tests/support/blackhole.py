"""A loopback address whose TCP connects time out: a listener with a full backlog.

The kernel drops SYNs to a listening socket whose accept queue is full, so a client's
connect() neither succeeds nor is refused: it times out, as it would against a dead host,
without a packet leaving the machine.
"""

from __future__ import annotations

import socket

from tests.support.smtpserver import fresh_ip


class Blackhole:
    def __init__(self, port: int = 25) -> None:
        self.ip = fresh_ip()
        self.port = port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((self.ip, port))
        self.listener.listen(0)
        self.fillers: list[socket.socket] = []

    def __enter__(self) -> Blackhole:
        for _ in range(8):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(0.3)
            try:
                s.connect((self.ip, self.port))
            except OSError:
                s.close()
                return self
            self.fillers.append(s)
        raise RuntimeError("could not fill the listen backlog")

    def __exit__(self, *exc: object) -> None:
        for s in self.fillers:
            s.close()
        self.listener.close()
