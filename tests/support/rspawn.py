"""Run qmail-remote exactly as qmail-rspawn does, and read its output as qmail does.

qmail-rspawn starts ``qmail-remote host sender recip`` with the queue file as stdin (a
regular, seekable file), stdout and stderr on one pipe, cwd the qmail home. Its
``report()`` then turns the output and the exit status into one result per delivery:
that reduction is reimplemented here from qmail-rspawn.c so tests see what qmail sees.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass


@dataclass
class Run:
    output: bytes
    """Everything qmail-remote wrote, byte for byte."""
    status: int
    qmail: bytes
    """What qmail-rspawn hands qmail-send: a letter and text, as in report()."""
    max_rss_kb: int = 0
    """The process's peak resident memory (getrusage), for bounds tests."""
    seconds: float = 0.0
    """Wall-clock time from start to exit, for bounds tests (never speed tests)."""

    @property
    def reports(self) -> list[bytes]:
        parts = self.output.split(b"\0")
        return parts[:-1]


def reduce_like_rspawn(output: bytes, status: int) -> bytes:
    """qmail-rspawn.c report(), for one recipient (qmail-send's only way of calling)."""
    if status < 0:
        return b"Zqmail-remote crashed.\n"
    if status == 111:
        return b"ZUnable to run qmail-remote.\n"
    if status != 0:
        return b"DUnable to run qmail-remote.\n"
    if not output:
        return b"Zqmail-remote produced no output.\n"
    result = -1
    j = 0
    for k, ch in enumerate(output):
        if ch == 0:
            letter = output[j : j + 1]
            if letter == b"K":
                result = 1
                break
            if letter == b"Z":
                result = 0
                break
            if letter == b"D":
                break
            j = k + 1
    orr = result
    if output[:1] == b"s":
        orr = 0
    elif output[:1] == b"h":
        orr = -1
    out = {1: b"K", 0: b"Z", -1: b"D"}[orr]
    first_end = output.find(b"\0")
    if first_end < 0:
        return out
    out += output[1:first_end]
    k = first_end + 1
    if result <= orr and k < len(output) and output[k : k + 1] in (b"Z", b"D", b"K"):
        rest_end = output.find(b"\0", k)
        out += output[k + 1 : rest_end if rest_end >= 0 else len(output)]
    return out


def run(
    program: str,
    home: str,
    host: str,
    sender: str,
    recipients: list[str],
    message: bytes,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> Run:
    with tempfile.TemporaryFile() as stdin:
        stdin.write(message)
        stdin.flush()
        stdin.seek(0)
        started = time.monotonic()
        proc = subprocess.Popen(
            [program, host, sender, *recipients],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=home,
            env=env if env is not None else {},
        )
        fired: list[bool] = []

        def kill() -> None:
            fired.append(True)
            proc.kill()

        killer = threading.Timer(timeout, kill)
        killer.start()
        try:
            assert proc.stdout is not None
            output = proc.stdout.read()
            # wait4, not Popen.wait: it also says how much memory the process took.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if fired:
            raise subprocess.TimeoutExpired(proc.args, timeout, output)
    code = proc.returncode
    return Run(
        output,
        code,
        reduce_like_rspawn(output, code),
        usage.ru_maxrss,
        time.monotonic() - started,
    )


def run_args(program: str, home: str, args: list[str], message: bytes = b"") -> Run:
    """Arbitrary argv (for the usage report)."""
    with tempfile.TemporaryFile() as stdin:
        stdin.write(message)
        stdin.seek(0)
        proc = subprocess.run(
            [program, *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=home,
            env={},
            timeout=60,
        )
    return Run(proc.stdout, proc.returncode, reduce_like_rspawn(proc.stdout, proc.returncode))
