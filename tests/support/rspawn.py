"""Run qmail-remote exactly as qmail-rspawn does, and read its output as qmail does.

qmail-rspawn starts ``qmail-remote host sender recip`` with the queue file as stdin (a
regular, seekable file), stdout and stderr on one pipe, cwd the qmail home. Its
``report()`` then turns the output and the exit status into one result per delivery:
that reduction is reimplemented here from qmail-rspawn.c so tests see what qmail sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
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
    """The process's peak resident memory (getrusage), when asked for (bounds tests)."""
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
    measure_memory: bool = False,
) -> Run:
    argv = [program, host, sender, *recipients]
    reaper = _Reaper() if measure_memory else None
    with tempfile.TemporaryFile() as stdin:
        stdin.write(message)
        stdin.flush()
        stdin.seek(0)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                reaper.command(argv) if reaper else argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=home,
                env=env if env is not None else {},
                timeout=timeout,
                pass_fds=reaper.fds if reaper else (),
            )
            rss, code = reaper.result() if reaper else (0, proc.returncode)
        finally:
            if reaper:
                reaper.close()
    output = proc.stdout
    return Run(output, code, reduce_like_rspawn(output, code), rss, time.monotonic() - started)


class _Reaper:
    """Forks and reaps the program from a small interpreter: a process forked straight
    from the test run starts as big as the test run, and its peak memory (ru_maxrss, kept
    across exec) would say so, not what the program itself took."""

    SCRIPT = """
import os, sys
report = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(report)
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
os.write(report, b"%d %d" % (usage.ru_maxrss, os.waitstatus_to_exitcode(status)))
"""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.fds = (self.write_end,)

    def command(self, argv: list[str]) -> list[str]:
        return [sys.executable, "-I", "-S", "-c", self.SCRIPT, str(self.write_end), *argv]

    def result(self) -> tuple[int, int]:
        """(peak memory in KB, exit status) of the program, once it has ended."""
        os.close(self.write_end)
        self.write_end = -1
        rss, code = (int(x) for x in os.read(self.read_end, 100).split())
        return rss, code

    def close(self) -> None:
        for fd in (self.read_end, self.write_end):
            if fd >= 0:
                os.close(fd)


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
