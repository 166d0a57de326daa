"""Writing files the qmail way: a temporary file, fsync, then rename (or link) into place,
so a reader sees the old content or the new, never a half-written file."""

from __future__ import annotations

import contextlib
import os

from qremote.fdutil import write_all


def write_file(path: str, data: bytes, mode: int = 0o644, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``.

    With ``replace=False`` an existing ``path`` is left alone and FileExistsError raised.
    """
    folder = os.path.dirname(path) or "."
    # pid and a random part: two writers of one path, processes or threads, never meet.
    unique = f"{os.getpid()}.{os.urandom(4).hex()}"
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{unique}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        write_all(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.rename(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: nothing is overwritten
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # gone after a rename; the spare name after a link
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def replace_unsynced(path: str, data: bytes) -> None:
    """Write a file whole (a reader sees the old text or the new, never half), without
    fsync: for what is written every second and need not survive a crash (a worker's
    status and counts)."""
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
