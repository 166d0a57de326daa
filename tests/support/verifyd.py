"""The verifying daemon as a real process for tests (``qremote verifyd``), and the thin
filter compiled as ``qremote install`` compiles it (with sanitizers, as the tests build
the outbound client)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from qremote.atomic import write_file
from qremote.cli.install import MARKER, filter_wrapper_text
from qremote.daemon import compiled
from qremote.verify import status

from .qmailhome import SANITIZERS

NOBODY = "65534"
"""The user verifyd becomes when the tests run as root: a number, so that no account of
the machine's is needed."""


def build_filter(folder: str) -> str:
    """The compiled thin filter in ``folder``, with this checkout's Python path beside it
    (the tests name the qmail home in QMAILHOME)."""
    fallback = os.path.join(folder, "qremote-dkimverify.python")
    write_file(fallback, filter_wrapper_text("/nonexistent").encode(), 0o755)
    program = os.path.join(folder, "qremote-dkimverify")
    compiled.build(folder, fallback, MARKER, program, SANITIZERS, compiled.VERIFY_SOURCE)
    return program


class Verifyd:
    def __init__(self, home: str, *args: str) -> None:
        self.home = home
        self.log_path = os.path.join(home, "verifyd.log")
        self.args = list(args)
        if os.geteuid() == 0 and "--user" not in args:
            self.args += ["--user", NOBODY]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Verifyd:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qremote.cli.qremote", "verifyd", *self.args],
            env={**os.environ, "QMAILHOME": self.home},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 30
        while status.ask(self.home) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"verifyd did not start: {self.log()}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def __enter__(self) -> Verifyd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
