"""Reading qmail control files by qmail's rules.

Single-value files use the first line with trailing blanks stripped; list files skip blank
lines and ``#`` comments; ``key:value`` maps are case-insensitive, split at the first ``:``,
and later lines win. A missing file means "use the default"; a file that exists but cannot
be read, or holds a value that makes no sense, is a :class:`ControlError` naming the file,
which qmail-remote turns into a temporary failure (never a bounce).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class ControlError(Exception):
    """A control file exists but is unreadable or malformed; the message names it."""


@dataclass(frozen=True)
class ControlDir:
    """The ``control/`` directory of one qmail installation."""

    path: str

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def lines(self, name: str) -> list[str] | None:
        """All lines with trailing blanks stripped, or None when the file does not exist."""
        try:
            with open(self._file(name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ControlError(f"control/{name}: {e.strerror}") from None
        text = data.decode("utf-8", "surrogateescape")
        return [line.rstrip(" \t\r") for line in text.split("\n")]

    def line(self, name: str) -> str | None:
        """The first line, as qmail's control_rldef reads it; None when missing."""
        lines = self.lines(name)
        if lines is None:
            return None
        return lines[0]

    def integer(self, name: str, default: int) -> int:
        value = self.line(name)
        if value is None:
            return default
        value = value.strip()
        if not value.isdigit():
            raise ControlError(f"control/{name}: {value!r} is not a whole number")
        return int(value)

    def listing(self, name: str) -> list[str]:
        """Non-blank, non-comment lines; an empty list when the file is missing."""
        return parse_list(self.lines(name) or [])

    def mapping(self, name: str) -> dict[str, str]:
        return parse_map(self.lines(name) or [])


def parse_list(lines: list[str]) -> list[str]:
    return [line for line in lines if line and not line.startswith("#")]


def parse_map(lines: list[str]) -> dict[str, str]:
    """qmail's constmap with a colon: keys lowercased, split at the first ':', later wins.

    A line without a colon maps to the empty string, as constmap does.
    """
    result: dict[str, str] = {}
    for line in parse_list(lines):
        key, _, value = line.partition(":")
        result[key.lower()] = value
    return result


def shown(path: str, parts: int = 3) -> str:
    """The tail of a path as messages name control files (``control/tlshosts/x.pem``):
    the qmail home is the administrator's to know, the file is what they must find."""
    return os.sep.join(path.split(os.sep)[-parts:])


def qmail_home() -> str:
    return os.environ.get("QMAILHOME") or "/var/qmail"
