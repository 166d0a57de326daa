"""qremoted as a real process for tests: started with ``qremote daemon``, stopped by signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from qremote.daemon import client

from .qmailhome import QmailHome


class Qremoted:
    def __init__(
        self, home: QmailHome, *args: str, nofile: tuple[int, int] | None = None
    ) -> None:
        self.home = home
        self.log_path = os.path.join(home.path, "qremoted.log")
        self.args = list(args)
        if not any(a.startswith("--workers") for a in args):
            # One process unless the test asks for workers: what a test counts (kept
            # connections, reuse, slots) is then in one place whatever the machine's cores.
            self.args = ["--workers", "1", *self.args]
        self.nofile = nofile
        """(soft, hard) descriptor limits to start it with, as a service manager would."""
        self.proc: subprocess.Popen | None = None

    def _limits(self) -> None:
        if self.nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def start(self) -> Qremoted:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qremote.cli.qremote", "daemon", *self.args],
            env={**os.environ, "QMAILHOME": self.home.path},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=self._limits if self.nofile is not None else None,
        )
        log.close()
        deadline = time.monotonic() + 30
        while client.status(self.home.path) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qremoted did not start: {self.log()}")
            time.sleep(0.05)
        return self

    def status(self) -> str | None:
        return client.status(self.home.path)

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def __enter__(self) -> Qremoted:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
