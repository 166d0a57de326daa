"""qremoted's socket side, sans policy: who may talk to it, and reading one request.

The thin client sends one frame (``wire``) with its stdin attached as SCM_RIGHTS; the
kernel says who it is (SO_PEERCRED). The queue file is read with pread from the
client's own offset, never moving it, so a client that ends up delivering in-process
reads the same bytes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct

from qremote.daemon import wire

MAX_FDS = 4
"""Descriptors a request may carry (one is used: the queue file)."""


def allowed(peer_uid: int, own_uid: int) -> bool:
    """Only the user the daemon runs as (qmailr) and root may hand it deliveries."""
    return peer_uid in (0, own_uid)


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end, from the kernel (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


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


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def _recvmsg(sock: socket.socket) -> tuple[bytes, list]:
    """recvmsg on a non-blocking socket; asyncio has no such call of its own."""
    loop = asyncio.get_running_loop()
    space = socket.CMSG_SPACE(MAX_FDS * 4)
    while True:
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(1 << 16, space, socket.MSG_CMSG_CLOEXEC)
            return data, ancillary
        except (BlockingIOError, InterruptedError):
            pass
        ready = loop.create_future()
        loop.add_reader(sock.fileno(), _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(sock.fileno())


async def read_request(sock: socket.socket, fds: list[int]) -> tuple[bytes, bytes]:
    """One request frame; descriptors that came with it are appended to ``fds``."""
    reader = wire.FrameReader()
    while True:
        data, ancillary = await _recvmsg(sock)
        for level, kind, cdata in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(cdata) - len(cdata) % 4
                fds.extend(int.from_bytes(cdata[i : i + 4], "little") for i in range(0, usable, 4))
        if not data:
            raise ConnectionError("the client closed before sending its request")
        frames = reader.feed(data)
        if frames:
            return frames[0]
