"""``qremote-dkimverify``: verify DKIM and DomainKeys, add Authentication-Results, and
exec the real qmail-queue, as qmail-smtpd's QMAILQUEUE filter.

The message arrives on fd 0 and the envelope on fd 1. The envelope is never read: the
real qmail-queue inherits fd 1 untouched. The message is spooled to a memory file; the
new message (our header, then the original with any forged Authentication-Results of ours
renamed) goes to qmail-queue through a second memory file, filled by a kernel copy, so
the message is held in Python's memory only once, for the verifiers.

Nothing is ever lost: if anything goes wrong in verification, the original message goes
to qmail-queue unchanged. Only qmail-queue itself, or the configured policy, refuses mail.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from qremote.authres import authserv_id
from qremote.control import ControlDir, ControlError
from qremote.fdutil import memory_file, write_all
from qremote.verify import wire
from qremote.verify.rewrite import skipped_header, with_header

if TYPE_CHECKING:
    from qremote.verify.dkimpolicy import Verdict

EXIT_PERMANENT = 31  # qmail-smtpd: 554 mail server permanently rejected message (#5.3.0)
EXIT_TEMPORARY = 71  # qmail-smtpd: 451 mail server temporarily rejected message (#4.3.0)
CHUNK = 1 << 20


def spool(source: int) -> tuple[int, int]:
    """Copy fd ``source`` into a memory file; (fd, size)."""
    fd = memory_file("qremote-dkimverify-in")
    size = 0
    while True:
        chunk = os.read(source, CHUNK)
        if not chunk:
            break
        write_all(fd, chunk)
        size += len(chunk)
    return fd, size


def real_queue(home: str) -> str:
    return os.environ.get("QMAILQUEUE_ORIG") or os.path.join(home, "bin", "qmail-queue")


def exec_queue(program: str, fd: int) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.dup2(fd, 0)
    if fd != 0:
        os.close(fd)
    env = {k: v for k, v in os.environ.items() if k != "QMAILQUEUE"}
    try:
        os.execve(program, [program], env)
    except OSError as e:
        _log(f"cannot run {program}: {e.strerror}")
        os._exit(EXIT_TEMPORARY)


def _log(text: str) -> None:
    try:
        os.write(2, f"qremote-dkimverify: {text}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def build(home: str, message_fd: int, size: int) -> tuple[int, Verdict | None]:
    """Verify in this process, with the settings and DNS read now for this message."""
    # start-up: --help/--version and a refused message load no verifier
    from qremote.verify.build import Settings
    from qremote.verify.build import build as verified
    from qremote.verify.txt import TxtLookup

    settings = Settings.load(home)
    lookup = TxtLookup(settings.servers, settings.budget)
    remote_ip = wire.client_address(os.environ.get("TCPREMOTEIP"))
    built = verified(settings, message_fd, size, lookup, remote_ip)
    return built.out, built.verdict


FALLBACK = "dkimverifyfallback"
"""control/dkimverifyfallback: what the thin filter's Python path does when the verifying
daemon did not answer: ``verify`` (the default; here, in this process) or ``pass`` (on
unverified, with a note in our Authentication-Results field). Read here, not through
qremote.settings: the ``pass`` path must not pay for loading the delivery's modules."""
FALLBACK_WORDS = ("verify", "pass")


def fallback_word(control: ControlDir) -> str:
    """control/dkimverifyfallback's word; ControlError when it is none of ours."""
    word = (control.line(FALLBACK) or FALLBACK_WORDS[0]).strip().lower()
    if word not in FALLBACK_WORDS:
        raise ControlError(f"control/{FALLBACK}: {word[:40]!r} is not verify or pass")
    return word


def fallback_mode(home: str) -> str:
    """``verify`` or ``pass``; a file that says anything else: ``verify``, and a log line."""
    try:
        return fallback_word(ControlDir(os.path.join(home, "control")))
    except ControlError as e:
        _log(f"{e}; verifying")
        return "verify"


def unverified(home: str, message_fd: int, size: int, why: str) -> int:
    """The message passed on without verification: a note says so, forged fields of ours
    are still renamed, and no verifier is loaded (what the thin filter falls back to when
    control/dkimverifyfallback says ``pass``)."""
    ours = authserv_id(ControlDir(os.path.join(home, "control")))
    return with_header(ours, skipped_header(ours, f"not verified: {why}"), message_fd, size)


HELP = """\
qremote-dkimverify: a QMAILQUEUE filter for incoming mail (qremote {version}).

qmail-smtpd (or any program that calls qmail-queue) runs it in qmail-queue's place, with
QMAILQUEUE=$QMAILHOME/bin/qremote-dkimverify in its environment (tcprules). It reads the
message on fd 0, verifies its DKIM and DomainKeys signatures, adds one
Authentication-Results field, and execs the real qmail-queue with the envelope on fd 1
untouched. control/dkimverifypolicy may reject or defer; anything that goes wrong passes
the message on unchanged. See README.md, "Verifying incoming mail".

  --help     this text
  --version  the version
"""


def _answer_a_person(argv: list[str]) -> bool:
    """--help and --version, and a person at a terminal with no message: say what this is
    on stdout (exit 0). A real qmail-queue caller passes no arguments and a pipe."""
    # start-up: --help/--version and a refused message load no verifier
    from qremote import __version__

    if argv[1:2] == ["--version"]:
        sys.stdout.write(f"qremote-dkimverify (qremote) {__version__}\n")
        return True
    if argv[1:2] == ["--help"] or (not argv[1:] and os.isatty(0)):
        sys.stdout.write(HELP.format(version=__version__))
        return True
    return False


def main(home: str | None = None) -> None:
    """``home``: the qmail home ``qremote install`` wrote into the wrapper; QMAILHOME in
    the environment wins, /var/qmail when neither says."""
    if _answer_a_person(sys.argv):
        sys.stdout.flush()
        os._exit(0)
    home = os.environ.get("QMAILHOME") or home or "/var/qmail"
    program = real_queue(home)
    try:
        message_fd, size = spool(0)
    except OSError as e:
        _log(f"cannot read the message: {e.strerror}")
        os._exit(EXIT_TEMPORARY)
    daemon_failed = os.environ.get("QREMOTE_VERIFYD_FAILED")
    if daemon_failed and fallback_mode(home) == "verify":
        _log(f"{daemon_failed[:200]}: verifying in this process")
    elif daemon_failed:
        try:
            out = unverified(home, message_fd, size, daemon_failed)
        except BaseException as e:  # noqa: BLE001 - never lose a message: pass it on unchanged
            _log(f"message passed on unchanged: {e.__class__.__name__}: {e}")
            exec_queue(program, message_fd)
            return
        _log(f"not verified ({daemon_failed}): passed on, as control/{FALLBACK} says")
        os.close(message_fd)
        exec_queue(program, out)
        return
    try:
        out, verdict = build(home, message_fd, size)
    except BaseException as e:  # noqa: BLE001 - never lose a message: pass it on unchanged
        _log(f"verification skipped, message passed on unchanged: {e.__class__.__name__}: {e}")
        exec_queue(program, message_fd)
        return
    if verdict is not None:
        _log(f"{verdict.action}: {verdict.text}")
        os._exit(EXIT_PERMANENT if verdict.action == "reject" else EXIT_TEMPORARY)
    os.close(message_fd)
    exec_queue(program, out)


if __name__ == "__main__":
    main()
