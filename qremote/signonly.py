"""Sign-only mode: sign, then hand the signed message to ``bin/qmail-remote.orig``.

For sites that keep their own patched C client for the SMTP side. It is switched on by
the file ``control/signonly``. The signed message goes to the original program's stdin
through a memory file (or an unlinked temporary file), so nothing is left on disk; the
original program's reports are what qmail-rspawn reads.
"""

from __future__ import annotations

import os

from qremote import report
from qremote.fdutil import memory_file, stderr_to_devnull
from qremote.signing.sign import SigningError, Unsignable, sign_message, store_for
from qremote.smtp.body import has_partial_final_line


def sign_and_exec(settings, argv: list[bytes], message: bytes, stderr: int | None) -> bytes:
    """Exec qmail-remote.orig with the signed message; a report only if that fails."""
    if has_partial_final_line(message):
        return report.PARTIAL_LINE + b"\0"
    try:
        signed = sign_message(message, argv[2], store_for(settings.control.path), settings.signing)
    except SigningError as e:
        return report.sign_error(str(e)) + b"\0"
    except Unsignable as e:
        return report.unsignable(str(e)) + b"\0"
    program = os.path.join(settings.home, "bin", "qmail-remote.orig")
    try:
        fd = memory_file("qremote-signed", signed.headers + message)
        os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(fd, 0)
        os.close(fd)
        if stderr is not None:
            os.dup2(stderr, 2)
        os.execv(program, [program.encode(), *argv[1:]])
    except OSError as e:
        if stderr is not None:
            stderr_to_devnull()
        return report.cannot_run(program, e.strerror or str(e)) + b"\0"
    raise AssertionError("unreachable")
