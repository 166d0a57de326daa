"""``qremote check``'s look at the verifying daemon: that the process parsing incoming
mail cannot read the signing keys, and that its socket is the qmail-smtpd user's alone.

Nothing to say when there is no socket (the site does not run verifyd). The daemon's user
comes from the kernel (SO_PEERCRED on a connection to it), never from its own words.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterator

from qremote.cli.install import first_blocked
from qremote.signing.keys import files_in
from qremote.verify import status, wire


def _account(uid: int) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(uid)
    except KeyError:  # a number without an account: its own group, no others
        return pwd.struct_passwd((str(uid), "x", uid, uid, "", "/", "/bin/false"))


def readable_keys(home: str, uid: int) -> Iterator[str]:
    """Files under control/domainkeys/ that ``uid`` could read, from their modes."""
    account = _account(uid)
    for path in files_in(os.path.join(home, "control", "domainkeys")):
        if first_blocked([path], account) is None:
            yield path


def findings(home: str) -> Iterator[str]:
    path = os.path.join(home, wire.SOCKET_PATH)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        yield f"{path} is not a socket: verifyd cannot listen there"
        return
    if st.st_mode & 0o022:
        yield (
            f"{path}: mode {oct(st.st_mode & 0o777)}, so others can use it: verifyd's peer "
            "check alone keeps them out; it should be 0600, its user's alone (verifyd "
            "makes it so at start)"
        )
    answer = status.ask(home)
    if answer is None:
        yield (
            f"{path}: no verifyd answers (it was killed?); qremote-dkimverify verifies "
            "every message in-process"
        )
        return
    if answer.uid == 0:
        yield f"verifyd (pid {answer.pid}) runs as root: it parses mail from the internet"
        return
    key = next(readable_keys(home, answer.uid), None)
    if key is not None:
        yield (
            f"verifyd runs as uid {answer.uid}, which can read {key}: the process that "
            "parses incoming mail must not reach the signing keys (chmod 600, owned by "
            "qmail-remote's user)"
        )
