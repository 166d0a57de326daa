"""The new message qmail-queue gets: one Authentication-Results field of ours first, then
the original with every field that claims our authserv-id renamed (RFC 8601 section 5:
a forger must not be believed on our behalf).

Light on purpose (no verifier, no DNS): the fallback that passes a message on unverified
uses it without loading dkimpy.
"""

from __future__ import annotations

import os
import re

from qremote.authres import authserv_id_of
from qremote.fdutil import memory_file, write_all
from qremote.verify import results

CHUNK = 1 << 20


def copy_range(src: int, dst: int, offset: int, count: int) -> None:
    """``count`` bytes of ``src`` from ``offset`` onto ``dst``: a kernel copy where it can."""
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


def with_header(ours: str, header: bytes, message_fd: int, size: int) -> int:
    """A new memory file: ``header``, then the message with forged fields of ours renamed."""
    end = header_block_end(message_fd, size)
    head, _ = rename_forged(os.pread(message_fd, end, 0), ours)
    out = memory_file("qremote-dkimverify-out")
    write_all(out, header)
    write_all(out, head)
    copy_range(message_fd, out, end, size - end)
    return out


def skipped_header(ours: str, why: str) -> bytes:
    """The field for a message passed on unverified (the daemon failed and
    control/dkimverifyfallback says ``pass``): no method was applied (RFC 8601 2.2)."""
    return f"Authentication-Results: {ours}; none ({results.comment(why)})\n".encode(
        "ascii", "replace"
    )
