"""File-descriptor helpers shared by qmail-remote, sign-only mode and the verify filter.

Standard library only, and nothing heavy: qmail-remote's start-up path imports this, so
it uses ``posix`` (built into the interpreter) rather than ``os`` (a module to load).
"""

import posix


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (a write may take fewer); OSError is the caller's to handle."""
    view = memoryview(data)
    while view:
        try:
            view = view[posix.write(fd, view) :]
        except InterruptedError:
            continue


def stderr_to_devnull() -> None:
    """Point fd 2 at /dev/null: stray interpreter warnings must not land in a report."""
    try:
        fd = posix.open("/dev/null", posix.O_WRONLY)
        posix.dup2(fd, 2)
        posix.close(fd)
    except OSError:
        pass


def memory_file(name: str, data: bytes = b"") -> int:
    """An anonymous file (memfd, else an unlinked temporary file) holding ``data``,
    positioned at its end: nothing is left on disk whatever happens."""
    try:
        fd = posix.memfd_create(name, 0)
    except (AttributeError, OSError):
        import tempfile

        f = tempfile.TemporaryFile()
        fd = posix.dup(f.fileno())
        f.close()
    write_all(fd, data)
    return fd
