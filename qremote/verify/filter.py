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
import re
import sys
from typing import TYPE_CHECKING

from qremote.fdutil import memory_file, write_all

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


def _copy_range(src: int, dst: int, offset: int, count: int) -> None:
    while count > 0:
        try:
            n = os.copy_file_range(src, dst, count, offset)
        except (AttributeError, OSError):
            n = 0
        if n <= 0:
            data = os.pread(src, min(count, CHUNK), offset)
            if not data:
                return
            write_all(dst, data)
            n = len(data)
        offset += n
        count -= n


_AR = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)


_TSPECIALS = b'()<>@,;:\\"/[]?='


def _skip_cfws(text: bytes, i: int) -> int:
    """Past white space and comments (nested, with quoted pairs: RFC 5322 CFWS)."""
    depth = 0
    while i < len(text):
        c = text[i : i + 1]
        if depth and c == b"\\":
            i += 2
            continue
        if c == b"(":
            depth += 1
        elif c == b")" and depth:
            depth -= 1
        elif not depth and c not in (b" ", b"\t", b"\r", b"\n"):
            return i
        i += 1
    return i


def authserv_id_of(value: bytes) -> bytes:
    """The authserv-id of an Authentication-Results value, lowercased: RFC 8601's
    ``[CFWS] value``, where a value is an RFC 2045 token or a quoted-string. A forger
    may write ours in either form, or behind comments; all of them must be found."""
    i = _skip_cfws(value, 0)
    if value[i : i + 1] == b'"':
        out = bytearray()
        i += 1
        while i < len(value):
            c = value[i : i + 1]
            if c == b"\\":
                out += value[i + 1 : i + 2]
                i += 2
                continue
            if c == b'"':
                break
            if c not in (b"\r", b"\n"):
                out += c
            i += 1
        return bytes(out).lower()
    start = i
    while i < len(value) and value[i] > 32 and value[i] != 127 and value[i] not in _TSPECIALS:
        i += 1
    return value[start:i].lower()


def rename_forged(head: bytes, ours: str) -> tuple[bytes, int]:
    """Rename Authentication-Results fields that claim our authserv-id (RFC 8601 5)."""
    lines = head.split(b"\n")
    out: list[bytes] = []
    renamed = 0
    i = 0
    while i < len(lines):
        field_lines = [lines[i]]
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            field_lines.append(lines[i])
            i += 1
        first = field_lines[0]
        m = _AR.match(first)
        if m:
            value = b"\n".join(field_lines)[m.end() :]
            if authserv_id_of(value) == ours.lower().encode():
                field_lines[0] = b"X-Original-" + first
                renamed += 1
        out.extend(field_lines)
    return b"\n".join(out), renamed


def header_block_end(fd: int, size: int) -> int:
    """Offset just past the header block (after the empty line), or size if none.

    The file is read in chunks; the last 3 bytes of each are carried into the next, so a
    separator split across two chunks is still found, and the earliest separator wins.
    """
    offset = 0
    tail = b""
    while offset < size:
        chunk = os.pread(fd, min(CHUNK, size - offset), offset)
        if not chunk:
            break
        data = tail + chunk
        base = offset - len(tail)  # file offset of data[0]
        if base == 0:
            for empty in (b"\n", b"\r\n"):
                if data.startswith(empty):
                    return len(empty)  # no header fields at all
        found = [p + len(sep) for sep in (b"\n\n", b"\n\r\n") if (p := data.find(sep)) >= 0]
        if found:
            return base + min(found)
        tail = data[-3:]
        offset += len(chunk)
    return size


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
    """Verify and write the new message; (fd of the new message, policy verdict or None)."""
    # start-up: --help/--version and a refused message load no verifier
    from qremote.control import ControlDir, ControlError
    from qremote.routing.addresses import parse_nameserver
    from qremote.signing.choose import domain_of
    from qremote.signing.message import parse as parse_message
    from qremote.verify import dkcheck, dkimcheck, dkimpolicy, results
    from qremote.verify.txt import TxtLookup

    control = ControlDir(os.path.join(home, "control"))
    ours = (control.line("authservid") or control.line("me") or "localhost").strip()
    servers = [parse_nameserver(line) for line in control.listing("nameservers")]
    budget = control.integer("dkimverifytimeout", 20)
    rules = dkimpolicy.parse(control.lines("dkimverifypolicy") or [])
    lookup = TxtLookup(servers, float(budget))

    message = os.pread(message_fd, size, 0)
    unsigned_tail = (control.line("dkimlength") or "pass").strip().lower()
    if unsigned_tail not in ("pass", "policy"):
        raise ControlError(f"control/dkimlength: {unsigned_tail!r} is not pass or policy")
    found = dkimcheck.verify(message, lookup, unsigned_tail) + dkcheck.verify(message, lookup)
    try:
        from_fields = parse_message(message).get(b"from")
        from_domain = domain_of(from_fields[0].value) if from_fields else None
    except ValueError:
        from_domain = None
    del message
    verdict = dkimpolicy.verdict_for(rules, from_domain, found)

    end = header_block_end(message_fd, size)
    head = os.pread(message_fd, end, 0)
    head, _ = rename_forged(head, ours)
    out = memory_file("qremote-dkimverify-out")
    write_all(out, results.header(ours, found))
    write_all(out, head)
    _copy_range(message_fd, out, end, size - end)
    return out, verdict


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


def main() -> None:
    if _answer_a_person(sys.argv):
        sys.stdout.flush()
        os._exit(0)
    home = os.environ.get("QMAILHOME") or "/var/qmail"
    program = real_queue(home)
    try:
        message_fd, size = spool(0)
    except OSError as e:
        _log(f"cannot read the message: {e.strerror}")
        os._exit(EXIT_TEMPORARY)
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
