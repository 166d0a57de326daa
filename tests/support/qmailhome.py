"""A throw-away qmail home: control files, queue/lock/tcpto, and qremote installed."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from qremote.atomic import write_file
from qremote.cli.install import wrapper_text

from . import rspawn


@dataclass
class QmailHome:
    path: str

    @property
    def control(self) -> str:
        return os.path.join(self.path, "control")

    @property
    def program(self) -> str:
        return os.path.join(self.path, "bin", "qmail-remote")

    @property
    def tcpto(self) -> str:
        return os.path.join(self.path, "queue", "lock", "tcpto")

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.control, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def remove(self, name: str) -> None:
        os.unlink(os.path.join(self.control, name))

    def deliver(self, host: str, sender: str, recipients: list[str], message: bytes, **kw):
        return rspawn.run(self.program, self.path, host, sender, recipients, message, **kw)

    def deliver_standalone(
        self, host: str, sender: str, recipients: list[str], message: bytes, **kw
    ):
        """The same delivery, never through qremoted (its in-process path)."""
        program = self.program + "-standalone"
        return rspawn.run(program, self.path, host, sender, recipients, message, **kw)

    def qremote(self, *args: str, input=None, text: bool = True) -> subprocess.CompletedProcess:
        """Run the ``qremote`` admin command on this qmail home."""
        return subprocess.run(
            [sys.executable, "-m", "qremote.cli.qremote", *args],
            input=input,
            capture_output=True,
            text=text,
            env={**os.environ, "QMAILHOME": self.path},
        )


SANITIZERS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
"""The compiled client as the tests build it: any memory error or undefined behaviour
aborts it with a report on the same pipe as its output, so the test that caused it fails."""


def use_compiled_client(home: QmailHome, sanitized: bool = True) -> None:
    """Make ``bin/qmail-remote`` the compiled thin client, as ``qremote install`` does
    where there is a C compiler, with the Python client beside it as its fallback."""
    from qremote.cli.install import MARKER
    from qremote.daemon import compiled

    fallback = home.program + ".python"
    write_file(fallback, wrapper_text(home.path).encode(), 0o755)
    tmp = home.program + ".building"
    compiled.build(home.path, fallback, MARKER, tmp, SANITIZERS if sanitized else None)
    os.rename(tmp, home.program)


def make(path: str, nameserver: str | None = None) -> QmailHome:
    home = QmailHome(path)
    os.makedirs(home.control, exist_ok=True)
    os.makedirs(os.path.join(path, "bin"), exist_ok=True)
    os.makedirs(os.path.join(path, "queue", "lock"), exist_ok=True)
    with open(home.tcpto, "wb") as f:
        f.write(b"\0" * 1024)
    home.write("me", "me.example.org\n")
    # Never the machine's resolver: tests talk to loopback only.
    home.write("nameservers", (nameserver or "127.0.0.1:9") + "\n")
    home.write("timeoutconnect", "5\n")
    home.write("timeoutremote", "10\n")
    with open(home.program, "w") as f:
        f.write(wrapper_text(path))
    os.chmod(home.program, 0o755)
    # Made here, not on first use: a thread writing it while another forks would leave the
    # new file open for writing in that child, and exec'ing it then fails (ETXTBSY).
    text = wrapper_text(path).replace("main(home=", "main(daemon=False, home=")
    write_file(home.program + "-standalone", text.encode(), 0o755)
    return home
