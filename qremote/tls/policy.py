"""Which TLS to use with one MX host: a pure decision over the control directory's files.

- ``control/notlshosts/<mx>`` exists: plain text, never STARTTLS.
- ``control/tlshosts/<mx>.pem`` exists: STARTTLS is required and the certificate must
  verify against that CA file and match the MX name; any failure is temporary (``Z``).
- ``control/tlshosts/exhaustivelist`` exists: hosts without a pem file get plain text.
- otherwise opportunistic: STARTTLS when offered, the certificate is not checked, and a
  failed handshake is retried once in plain text on a new connection.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from enum import Enum

from qremote.control import ControlError


class Mode(Enum):
    PLAIN = "plain"
    OPPORTUNISTIC = "opportunistic"
    REQUIRED = "required"


@dataclass(frozen=True)
class Policy:
    mode: Mode
    ca_file: str | None = None


def _safe_name(mx: str) -> str | None:
    """An MX name usable as a file name; None for anything that could escape the folder."""
    name = mx.lower().rstrip(".")
    if not name or "/" in name or name.startswith(".") or "\0" in name:
        return None
    return name


def exists(path: str) -> bool:
    """Like os.path.exists, but a file we may not look at is an error, not an absence:
    an unreadable tlshosts/ must not quietly turn required TLS into opportunistic.

    A name too long to be a file (a legal 253-character MX name plus ``.pem``) cannot
    have a policy file, so it has none."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return False
        parts = path.split(os.sep)
        raise ControlError(f"{os.sep.join(parts[-3:])}: {e.strerror}") from None
    return True


def decide(control_path: str, mx: str) -> Policy:
    """The policy for one MX host; ControlError when the files cannot be read."""
    name = _safe_name(mx)
    if name is None:
        return Policy(Mode.OPPORTUNISTIC)
    if exists(os.path.join(control_path, "notlshosts", name)):
        return Policy(Mode.PLAIN)
    pem = os.path.join(control_path, "tlshosts", name + ".pem")
    if exists(pem):
        return Policy(Mode.REQUIRED, pem)
    if exists(os.path.join(control_path, "tlshosts", "exhaustivelist")):
        return Policy(Mode.PLAIN)
    return Policy(Mode.OPPORTUNISTIC)
