"""Frames on a local socket, without any I/O: one kind byte, a 4-byte big-endian length,
the payload. qremoted's protocol (``daemon/wire.py``) and the verifying daemon's
(``verify/wire.py``) are both made of them, each with its own set of kinds.

Standard library only and no imports at all: the thin clients load this per message.
"""

HEADER = 5
MAX_PAYLOAD = 1 << 24
"""No report, argv or answer comes near 16 MiB; anything larger is a broken peer."""


class WireError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


class FrameReader:
    """Feed it bytes as they arrive; it returns the frames completed so far. ``kinds``
    are the kind bytes the protocol has: anything else is a broken peer."""

    def __init__(self, kinds: frozenset[bytes]) -> None:
        self._kinds = kinds
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buf += data
        frames: list[tuple[bytes, bytes]] = []
        while len(self._buf) >= HEADER:
            kind = self._buf[:1]
            size = int.from_bytes(self._buf[1:HEADER], "big")
            if kind not in self._kinds or size > MAX_PAYLOAD:
                raise WireError(f"not a qremote frame (kind {kind!r}, length {size})")
            if len(self._buf) < HEADER + size:
                break
            frames.append((kind, self._buf[HEADER : HEADER + size]))
            self._buf = self._buf[HEADER + size :]
        return frames

    @property
    def pending(self) -> bool:
        """True when a frame has started but is not complete."""
        return bool(self._buf)
