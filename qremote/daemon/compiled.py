"""Building the compiled thin clients (``thinclient.c``, and the verify filter's
``verify/thinfilter.c``) for one qmail home.

qmail sites built qmail from source, so they have a C compiler. Where there is one,
``qremote install`` builds the client with the home and the Python path compiled in and
installs it as ``bin/qmail-remote``; the Python thin client goes beside it as
``bin/qmail-remote.python`` and remains the path for every delivery the daemon does not
take. Without a compiler, the Python client is ``bin/qmail-remote`` itself, as before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "thinclient.c")
FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=c11", "-D_GNU_SOURCE"]

STATIC = ["-static-pie"]
"""How a thin client is linked where the C library allows it (Debian's libc6-dev ships
``libc.a``; elsewhere the link fails and the client is linked dynamically, as any
program). qmail-rspawn starts one client per delivery: without the dynamic loader an
exec costs about 130 us less CPU here (a fork and exec of a small program; README) and
each running client about 40 KB less memory, which at a thousand deliveries in flight
is 40 MB (bench/scale.py). Position
independent, so the address layout stays randomized. The clients use nothing a static
C library lacks (no user or host name look-ups); a C library update reaches them when
``qremote install`` is run again."""


def c_string(text: str) -> str:
    """A C string literal for ``text`` (paths may hold quotes, backslashes, anything)."""
    out = []
    for byte in os.fsencode(text):
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def compiler() -> str | None:
    """The C compiler to use: ``$CC`` if set, else ``cc`` on PATH (None: no compiler)."""
    name = os.environ.get("CC") or "cc"
    return shutil.which(name)


VERIFY_SOURCE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "verify", "thinfilter.c"
)
"""The thin ``qremote-dkimverify`` (the verifying daemon's client), built the same way."""


def build(
    home: str,
    fallback: str,
    marker: str,
    out: str,
    extra: list[str] | None = None,
    source: str = SOURCE,
) -> str:
    """Compile a thin client (``source``: qmail-remote's by default) into ``out``, linked
    statically where it can be (:data:`STATIC`; never with a sanitizer in ``extra``, which
    needs the dynamic loader); returns how: the compiler, and ``linked statically`` when
    it was. Raises BuildError."""
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler (cc) on PATH")
    extra = extra or []
    links = [[]] if any(f.startswith("-fsanitize") for f in extra) else [STATIC, []]
    with tempfile.TemporaryDirectory(prefix="qremote-build-") as tmp:
        with open(os.path.join(tmp, "qremote-config.h"), "w") as f:
            f.write(f"#define QREMOTE_HOME {c_string(home)}\n")
            f.write(f"#define QREMOTE_FALLBACK {c_string(fallback)}\n")
            f.write(f"#define QREMOTE_MARKER {c_string(marker)}\n")
        for link in links:
            done = subprocess.run(
                [cc, *FLAGS, *link, *extra, "-I", tmp, "-o", out, source],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                return f"{cc}, linked statically" if link else cc
    raise BuildError(f"{cc} failed: {(done.stderr or done.stdout).strip()[-500:]}")


class BuildError(Exception):
    """The compiled client could not be built; the text says why."""
