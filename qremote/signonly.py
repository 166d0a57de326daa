"""Sign-only mode: sign, then hand the signed message to ``bin/qmail-remote.orig``.

For sites that keep their own patched C client for the SMTP side. It is switched on by
the file ``control/signonly``. The signed message goes to the original program's stdin
through a memory file (or an unlinked temporary file), so nothing is left on disk; the
original program's reports are what qmail-rspawn reads.
"""

from __future__ import annotations

import os
import tempfile

from qremote import report
from qremote.signing.sign import SigningError, sign_message, store_for


def _memory_file(data: bytes) -> int:
    try:
        fd = os.memfd_create("qremote-signed", 0)
    except (AttributeError, OSError):
        f = tempfile.TemporaryFile()
        fd = os.dup(f.fileno())
        f.close()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def sign_and_exec(settings, argv: list[bytes], message: bytes, stderr: int | None) -> bytes:
    """Exec qmail-remote.orig with the signed message; a report only if that fails."""
    from qremote.smtp.body import has_partial_final_line

    if has_partial_final_line(message):
        return report.PARTIAL_LINE + b"\0"
    try:
        signed = sign_message(message, argv[2], store_for(settings.control.path), settings.signing)
    except SigningError as e:
        return report.sign_error(str(e)) + b"\0"
    program = os.path.join(settings.home, "bin", "qmail-remote.orig")
    try:
        fd = _memory_file(signed.headers + message)
        os.dup2(fd, 0)
        os.close(fd)
        if stderr is not None:
            os.dup2(stderr, 2)
        os.execv(program, [program.encode(), *argv[1:]])
    except OSError as e:
        if stderr is not None:
            _quiet_stderr()
        reason = f"cannot run {program}: {e.strerror}"
        return b"Z" + reason.encode("utf-8", "replace") + b". (#4.3.0)\n\0"
    raise AssertionError("unreachable")


def _quiet_stderr() -> None:
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 2)
        os.close(fd)
    except OSError:
        pass
