"""The Unix-socket calls qremote's two daemons share and asyncio lacks: who the peer is
(SO_PEERCRED, from the kernel) and a read that takes descriptors along (SCM_RIGHTS).

qremoted takes qmail-remote's queue file this way, the verifying daemon the incoming
message; neither copies a message through the socket.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

from qremote.framing import FrameReader

MAX_FDS = 4
"""Descriptors one read may carry; our requests carry one."""


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end, from the kernel (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def descriptors_of(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in recvmsg's ancillary data (SCM_RIGHTS), in order."""
    fds: list[int] = []
    for level, kind, cdata in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(cdata) - len(cdata) % 4
            fds.extend(int.from_bytes(cdata[i : i + 4], "little") for i in range(0, usable, 4))
    return fds


async def recv_with_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    """recvmsg on a non-blocking socket: (bytes, descriptors that came with them). The
    descriptors are the caller's to close, even when the bytes are not wanted."""
    loop = asyncio.get_running_loop()
    space = socket.CMSG_SPACE(MAX_FDS * 4)
    while True:
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(1 << 16, space, socket.MSG_CMSG_CLOEXEC)
            return data, descriptors_of(ancillary)
        except (BlockingIOError, InterruptedError):
            pass
        ready = loop.create_future()
        loop.add_reader(sock.fileno(), _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(sock.fileno())


async def send_with_fd(sock: socket.socket, data: bytes, fd: int) -> None:
    """Send ``data`` with ``fd`` riding on its first byte (SCM_RIGHTS)."""
    loop = asyncio.get_running_loop()
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, "little"))]
    while True:
        try:
            sent = sock.sendmsg([data], rights)
            break
        except (BlockingIOError, InterruptedError):
            ready = loop.create_future()
            loop.add_writer(sock.fileno(), _wake, ready)
            try:
                await ready
            finally:
                loop.remove_writer(sock.fileno())
    if sent < len(data):
        await loop.sock_sendall(sock, data[sent:])


async def read_frame(
    sock: socket.socket, reader: FrameReader, fds: list[int]
) -> tuple[bytes, bytes]:
    """The first frame the peer sends; descriptors that came with it are appended to
    ``fds`` (the caller closes them whatever happens)."""
    while True:
        data, came = await recv_with_fds(sock)
        fds.extend(came)
        if not data:
            raise ConnectionError("the client closed before sending its request")
        frames = reader.feed(data)
        if frames:
            return frames[0]


async def accept(listener: socket.socket, log: Callable[[str], None]) -> socket.socket:
    """The next client, non-blocking. A failed accept (out of descriptors, say) is logged
    and tried again a tenth of a second later: it must not end the daemon's accept loop."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            conn, _ = await loop.sock_accept(listener)
        except OSError as e:
            log(f"accept failed: {e.strerror}")
            await asyncio.sleep(0.1)
            continue
        conn.setblocking(False)
        return conn
