"""qremoted's socket side, sans policy: who may talk to it, and reading one request.

The thin client sends one frame (``wire``) with its stdin attached as SCM_RIGHTS; the
kernel says who it is (SO_PEERCRED). The queue file is read with pread from the
client's own offset, never moving it, so a client that ends up delivering in-process
reads the same bytes.
"""

from __future__ import annotations

import os
import socket
import stat

from qremote.daemon import wire
from qremote.unixsock import peer_credentials, read_frame

__all__ = ["allowed", "peer_credentials", "read_queue_file", "read_request"]


def allowed(peer_uid: int, own_uid: int) -> bool:
    """Only the user the daemon runs as (qmailr) and root may hand it deliveries."""
    return peer_uid in (0, own_uid)


def read_queue_file(fd: int) -> bytes:
    """The message from the client's stdin, from its current offset, without moving it:
    if the client ends up delivering in-process it reads the same bytes."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise OSError("not a regular file")
    offset = os.lseek(fd, 0, os.SEEK_CUR)
    chunks: list[bytes] = []
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


async def read_request(sock: socket.socket, fds: list[int]) -> tuple[bytes, bytes]:
    """One request frame; descriptors that came with it are appended to ``fds``."""
    return await read_frame(sock, wire.FrameReader(), fds)
