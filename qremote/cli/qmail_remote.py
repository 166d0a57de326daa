"""``qmail-remote host sender recip [recip ...]``: the drop-in client.

qmail-rspawn turns a non-zero exit into a permanent bounce and reads stderr as part of
the report, so this entry point writes only reports, to fd 1, and always exits 0. Any
failure inside becomes a ``Z`` report: qmail-send retries, nothing is lost.
When qremoted runs, this process only passes the delivery on (``qremote.daemon.client``
imports nothing but built-ins); heavy modules are imported only for an in-process delivery.
"""

import posix
import sys

from qremote.fdutil import stderr_to_devnull, write_all

USAGE = b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0"
"""report.USAGE and its NUL, spelled out: the thin client loads as little as it can
(tests/test_units.py holds the two the same)."""


def _write_all(data: bytes) -> None:
    try:
        write_all(1, data)
    except OSError:
        pass  # qmail-rspawn went away: nobody is left to tell


def _silence_stderr() -> int | None:
    """Stray interpreter warnings must not land inside a report on qmail's pipe.

    Returns a close-on-exec copy of the original fd 2, for handing over to
    qmail-remote.orig in sign-only mode.
    """
    try:
        saved = posix.dup(2)
    except OSError:
        saved = None
    stderr_to_devnull()
    return saved


def _read_message() -> bytes | None:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = posix.read(0, 1 << 20)
        except InterruptedError:
            continue
        except OSError:
            return None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def run(argv: list[bytes], home: str, stderr: int | None = None) -> bytes:
    """The whole program as a function: arguments in, report bytes out.

    In sign-only mode it does not return when all goes well: it execs qmail-remote.orig.
    """
    if len(argv) < 4:
        return USAGE
    import os

    # start-up: the thin-client path loads nothing it can do without
    from qremote import report

    try:
        os.chdir(home)
    except OSError:
        return report.CHDIR + b"\0"
    message = _read_message()
    if message is None:
        return report.READ_ERROR + b"\0"
    import asyncio

    # start-up: the thin-client path loads nothing it can do without
    from qremote.control import ControlError
    from qremote.delivery import deliver
    from qremote.settings import load_settings

    try:
        settings = load_settings(home)
    except ControlError as e:
        return report.control_error(str(e)) + b"\0"
    if os.path.exists(os.path.join(home, "control", "signonly")):
        # start-up: the thin-client path loads nothing it can do without
        from qremote.signonly import sign_and_exec

        return sign_and_exec(settings, argv, message, stderr)
    host = argv[1].decode("utf-8", "surrogateescape")
    outcome = asyncio.run(deliver(settings, host, argv[2], list(argv[3:]), message))
    return outcome.wire()


HELP = b"""\
qmail-remote (qremote %s): qmail's remote delivery program, signing with DKIM and DomainKeys.

qmail-rspawn runs it as: qmail-remote host sender recipient [recipient ...]
with the message on fd 0; it writes one report per recipient and one for the message on
fd 1, as notqmail's C qmail-remote does, and always exits 0. It hands the delivery to
qremoted when that runs. See README.md; `qremote check` checks the installation.
"""


def _answer_a_person(argv: list[bytes]) -> bytes | None:
    """``--help`` and ``--version`` alone: what this is, on stdout (qmail-rspawn never
    calls it so: it always passes a host, a sender and a recipient)."""
    # start-up: the thin-client path loads nothing it can do without
    from qremote import __version__

    if argv[1:] == [b"--version"]:
        return f"qmail-remote (qremote) {__version__}\n".encode()
    if argv[1:] == [b"--help"]:
        return HELP % __version__.encode()
    return None


def main(home: str | None = None, daemon: bool = True) -> None:
    """Hand the delivery to qremoted when it runs; otherwise, or when it does not take
    the delivery, run it here. Either way exactly one report, and exit 0.

    ``daemon=False`` always delivers in-process (the tests' standalone program).
    """
    saved_stderr = _silence_stderr()
    try:
        encoding = sys.getfilesystemencoding()
        argv = [a.encode(encoding, "surrogateescape") for a in sys.argv]
        told = _answer_a_person(argv)
        if told is not None:
            _write_all(told)
            posix._exit(0)
        env_home = posix.environ.get(b"QMAILHOME", b"").decode(encoding, "surrogateescape")
        qmail_home = env_home or home or "/var/qmail"
        out = None
        fallback = bool(posix.environ.get(b"QREMOTE_INPROCESS"))
        if fallback:
            daemon = False  # the compiled client asked qremoted already
        if daemon and len(argv) >= 4:
            # start-up: the thin-client path loads nothing it can do without
            from qremote.daemon import client

            out = client.deliver(qmail_home, argv[1:])
            fallback = out is None
        if out is None:
            if fallback:
                # start-up: built-ins only, as above
                from qremote.daemon.client import count_fallback

                count_fallback(qmail_home)
            out = run(argv, qmail_home, saved_stderr)
    except BaseException as e:  # noqa: BLE001 - every failure must become a Z report
        try:
            # start-up: the thin-client path loads nothing it can do without
            from qremote.report import internal_error

            out = internal_error(f"{e.__class__.__name__}: {e}") + b"\0"
        except BaseException:  # noqa: BLE001
            out = b"ZInternal error in qmail-remote. (#4.3.0)\n\0"
    _write_all(out)
    posix._exit(0)


if __name__ == "__main__":
    main()
