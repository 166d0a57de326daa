"""A stand-in for qmail-queue and a runner that calls a QMAILQUEUE filter as qmail-smtpd
does: message on fd 0, envelope on fd 1, the filter's exit code as the result."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

STAND_IN = """#!{python}
import os, sys
def read_all(fd):
    out = b""
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return out
        out += chunk
msg = read_all(0)
env = read_all(1)
with open({runs!r}, "ab") as f:
    f.write(b"x")
with open({out!r}, "wb") as f:
    f.write(msg)
with open({env!r}, "wb") as f:
    f.write(env)
sys.exit(int(open({code!r}).read()))
"""


@dataclass
class Queued:
    status: int
    log: str
    message: bytes | None
    """What the stand-in qmail-queue read on fd 0; None if it never ran."""
    envelope: bytes | None


class StandInQueue:
    def __init__(self, folder: str, exit_code: int = 0) -> None:
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.program = os.path.join(folder, "qmail-queue")
        self.out = os.path.join(folder, "queued-message")
        self.env = os.path.join(folder, "queued-envelope")
        self.code = os.path.join(folder, "exit-code")
        self.runs_path = os.path.join(folder, "queue-runs")
        self.command = [sys.executable, "-m", "qremote.verify.filter"]
        """The filter to run: this checkout's, or an installed one's console script."""
        self.environ: dict[str, str] = {}
        """More environment for the filter (tcpserver's TCPREMOTEIP, say)."""
        with open(self.code, "w") as f:
            f.write(str(exit_code))
        with open(self.program, "w") as f:
            f.write(
                STAND_IN.format(
                    python=sys.executable,
                    out=self.out,
                    env=self.env,
                    code=self.code,
                    runs=self.runs_path,
                )
            )
        os.chmod(self.program, 0o755)

    @property
    def runs(self) -> int:
        """How many times the stand-in qmail-queue has run."""
        try:
            return os.path.getsize(self.runs_path)
        except FileNotFoundError:
            return 0

    def start(self, home: str, message: bytes, envelope: bytes) -> subprocess.Popen:
        """The filter started on ``message``, not waited for; :meth:`result` collects it."""
        for path in (self.out, self.env):
            if os.path.exists(path):
                os.unlink(path)
        msg_path = os.path.join(self.folder, "incoming-message")
        env_path = os.path.join(self.folder, "incoming-envelope")
        with open(msg_path, "wb") as f:
            f.write(message)
        with open(env_path, "wb") as f:
            f.write(envelope)
        with open(msg_path, "rb") as stdin, open(env_path, "rb") as fd1:
            return subprocess.Popen(
                self.command,
                stdin=stdin,
                stdout=fd1,
                stderr=subprocess.PIPE,
                env={
                    **os.environ,
                    "QMAILHOME": home,
                    "QMAILQUEUE_ORIG": self.program,
                    **self.environ,
                },
            )

    def result(self, proc: subprocess.Popen) -> Queued:
        _, err = proc.communicate(timeout=120)
        return self._queued(proc.returncode, err)

    def _queued(self, status: int, err: bytes) -> Queued:
        got = env = None
        if os.path.exists(self.out):
            with open(self.out, "rb") as f:
                got = f.read()
            with open(self.env, "rb") as f:
                env = f.read()
        return Queued(status, err.decode("utf-8", "replace"), got, env)

    def run(self, home: str, message: bytes, envelope: bytes) -> Queued:
        """The filter run on ``message`` as qmail-smtpd runs it, to its end."""
        return self.result(self.start(home, message, envelope))
