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

from qremote.fdutil import memory_file, write_all

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


def authserv_id_of(value: bytes) -> bytes:
    """The authserv-id of an Authentication-Results value (before ';' and any version)."""
    text = value.split(b";", 1)[0]
    text = re.sub(rb"\([^)]*\)", b" ", text)
    words = text.split()
    return words[0].lower() if words else b""


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
    """Offset just past the header block (after the empty line), or size if none."""
    offset = 0
    tail = b""
    while offset < size:
        chunk = os.pread(fd, min(CHUNK, size - offset), offset)
        data = tail + chunk
        for sep in (b"\n\n", b"\r\n\r\n"):
            pos = data.find(sep)
            if pos >= 0:
                return offset - len(tail) + pos + len(sep)
        if data.startswith(b"\n"):
            return 1
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


def build(home: str, message_fd: int, size: int) -> tuple[int, object]:
    """Verify and write the new message; (fd of the new message, policy verdict or None)."""
    from qremote.control import ControlDir
    from qremote.routing.dnserrors import parse_nameserver
    from qremote.signing.choose import domain_of
    from qremote.signing.message import parse as parse_message
    from qremote.verify import dkcheck, dkimcheck, policy, results
    from qremote.verify.txt import TxtLookup

    control = ControlDir(os.path.join(home, "control"))
    ours = (control.line("authservid") or control.line("me") or "localhost").strip()
    servers = [parse_nameserver(line) for line in control.listing("nameservers")]
    budget = control.integer("dkimverifytimeout", 20)
    rules = policy.parse(control.lines("dkimverifypolicy") or [])
    lookup = TxtLookup(servers, float(budget))

    message = os.pread(message_fd, size, 0)
    found = dkimcheck.verify(message, lookup) + dkcheck.verify(message, lookup)
    try:
        from_fields = parse_message(message).get(b"from")
        from_domain = domain_of(from_fields[0].value) if from_fields else None
    except ValueError:
        from_domain = None
    del message
    verdict = policy.decide(rules, from_domain, found)

    end = header_block_end(message_fd, size)
    head = os.pread(message_fd, end, 0)
    head, _ = rename_forged(head, ours)
    out = memory_file("qremote-dkimverify-out")
    write_all(out, results.header(ours, found))
    write_all(out, head)
    _copy_range(message_fd, out, end, size - end)
    return out, verdict


def main() -> None:
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
    sys.exit(main())
