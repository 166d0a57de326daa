"""Shaping's memory, in files under ``$QMAILHOME/qremote/shaping/``, so that every
qremote process on the host (qremoted's workers, a standalone qmail-remote) keeps one
rate and sees one suspension.

One folder per path (a group and a source address): ``tat`` holds GCRA's theoretical
arrival time (8 bytes, read and written under ``flock``: one open, one lock, one read
and one write per delivery that has a rate), and ``state.json`` what automation set
(a suspension, a lowered rate, the matches counted toward a threshold), replaced
atomically under the folder's ``lock``. A path without a rate and without anything set
costs one failed ``open`` of ``state.json`` per delivery. Times are the wall clock
(shared by processes); every function takes ``now``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from qremote.atomic import write_file
from qremote.limits import SHAPING_STATE_BYTES
from qremote.shaping.config import Rate, parse_rate
from qremote.shaping.rates import Admitted, Lowered, Refused, admit

_TAT = struct.Struct("<d")


@dataclass
class Suspension:
    since: float
    until: float
    text: str


@dataclass
class PathState:
    """What automation set on one path."""

    group: str
    source: str
    suspended: Suspension | None = None
    lowered: Lowered | None = None
    matches: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        out: dict[str, object] = {"group": self.group, "source": self.source}
        if self.suspended is not None:
            s = self.suspended
            out["suspended"] = {"since": s.since, "until": s.until, "text": s.text}
        if self.lowered is not None:
            low = self.lowered
            out["lowered"] = {
                "rate": low.rate.text, "since": low.since, "until": low.until, "text": low.text,
            }  # fmt: skip
        if self.matches:
            out["matches"] = self.matches
        return json.dumps(out, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, group: str, source: str) -> PathState:
        """A damaged file reads as nothing set (shaping must never stop mail)."""
        state = cls(group, source)
        try:
            raw = json.loads(data)
            if "suspended" in raw:
                s = raw["suspended"]
                state.suspended = Suspension(float(s["since"]), float(s["until"]), str(s["text"]))
            if "lowered" in raw:
                low = raw["lowered"]
                state.lowered = Lowered(
                    parse_rate(low["rate"]),
                    float(low["since"]),
                    float(low["until"]),
                    str(low["text"]),
                )
            state.matches = {
                str(k): [float(t) for t in v] for k, v in dict(raw.get("matches", {})).items()
            }
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls(group, source)
        return state

    @classmethod
    def stored(cls, data: bytes) -> PathState | None:
        """A stored state that names its own path (``qremote status`` lists them);
        None for one that does not, or has nothing set."""
        try:
            raw = json.loads(data)
            group, source = str(raw["group"]), str(raw["source"])
        except (ValueError, KeyError, TypeError):
            return None
        state = cls.from_json(data, group, source)
        return None if state.empty else state

    @property
    def empty(self) -> bool:
        return self.suspended is None and self.lowered is None and not self.matches


def path_dir(root: str, group: str, source: str) -> str:
    key = f"{group} {source}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in key)[:40]
    return os.path.join(root, f"{safe}-{digest}")


_MADE: set[str] = set()
"""Path folders this process made (or found) already."""


class Store:
    def __init__(self, home: str) -> None:
        self.root = os.path.join(home, "qremote", "shaping")

    def _folder(self, group: str, source: str) -> str:
        folder = path_dir(self.root, group, source)
        if folder not in _MADE:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            _MADE.add(folder)
        return folder

    def _open(self, group: str, source: str, name: str) -> int:
        """A path's file, opened for update (made, with its folder, when missing: an
        administrator may have removed qremote/shaping/ to start afresh)."""
        path = os.path.join(self._folder(group, source), name)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            _MADE.discard(os.path.dirname(path))
            path = os.path.join(self._folder(group, source), name)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def reserve(
        self, group: str, source: str, rate: Rate, now: float, max_wait: float
    ) -> Admitted | Refused:
        """GCRA on the path's ``tat`` file: the delivery's turn, reserved, or why not."""
        fd = self._open(group, source, "tat")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = os.pread(fd, _TAT.size, 0)
            tat = _TAT.unpack(data)[0] if len(data) == _TAT.size else 0.0
            decision = admit(tat, now, rate, max_wait)
            if isinstance(decision, Admitted):
                os.pwrite(fd, _TAT.pack(decision.tat), 0)
            return decision
        finally:
            os.close(fd)

    def read(self, group: str, source: str) -> PathState:
        """What is set on the path (nothing, when the file is missing or damaged)."""
        path = os.path.join(path_dir(self.root, group, source), "state.json")
        try:
            with open(path, "rb") as f:
                data = f.read(SHAPING_STATE_BYTES + 1)
        except OSError:
            return PathState(group, source)
        if len(data) > SHAPING_STATE_BYTES:
            return PathState(group, source)
        return PathState.from_json(data, group, source)

    def update(
        self, group: str, source: str, change: Callable[[PathState], PathState]
    ) -> PathState:
        """Read, change and write the path's state under its lock (one writer at a time
        across processes); an empty state removes the file."""
        folder = self._folder(group, source)
        with _locked(self._open(group, source, "lock")):
            state = change(self.read(group, source))
            path = os.path.join(folder, "state.json")
            if state.empty:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            else:
                write_file(path, state.to_json()[:SHAPING_STATE_BYTES], 0o600)
            return state

    def all(self) -> Iterator[PathState]:
        """Every path with something set (``qremote status``)."""
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return
        for name in names:
            path = os.path.join(self.root, name, "state.json")
            try:
                with open(path, "rb") as f:
                    data = f.read(SHAPING_STATE_BYTES + 1)
            except OSError:
                continue
            state = PathState.stored(data)
            if state is not None:
                yield state

    def resume(self, group: str) -> int:
        """Lift the suspension and the lowered rate of every path of ``group``; how many
        paths had one."""
        lifted = 0
        for state in list(self.all()):
            if state.group != group or (state.suspended is None and state.lowered is None):
                continue
            lifted += 1

            def clear(s: PathState) -> PathState:
                s.suspended = s.lowered = None
                return s

            self.update(state.group, state.source, clear)
        return lifted


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    """``fd`` locked (flock) for the block, closed after it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
