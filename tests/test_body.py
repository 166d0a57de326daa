"""qremote/smtp/body.py: the message as DATA sends it (CRLF, dots doubled), in pieces."""

from __future__ import annotations

import random

import pytest

from qremote.smtp.body import PartialFinalLine, encode_body


@pytest.mark.parametrize(
    "message, wire",
    [
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b".a\n.\n..\n", b"..a\r\n..\r\n...\r\n.\r\n"),
        (b"x\r\ny\n", b"x\r\ny\r\n.\r\n"),
        (b"", b".\r\n"),
        (b"\n", b"\r\n.\r\n"),
        (b"bare\rcr\n", b"bare\rcr\r\n.\r\n"),
    ],
)
def test_body_encoding(message, wire):
    assert encode_body(message) == wire


def reference_encoding(message: bytes) -> bytes:
    """RFC 5321 section 4.5.2 in the plainest words: every line, CRLF-terminated, with a
    leading dot doubled, then the final dot."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")[:-1]
    return b"".join((b"." if ln.startswith(b".") else b"") + ln + b"\r\n" for ln in lines) + (
        b".\r\n"
    )


def test_body_in_pieces_is_the_body_whole_whatever_the_cut(monkeypatch):
    import qremote.smtp.body as body

    rng = random.Random(5321)
    for piece in (1, 2, 3, 7, 64):
        monkeypatch.setattr(body, "PIECE", piece)
        for _ in range(300):
            head = bytes(rng.choice(b"a.\n\r") for _ in range(rng.randrange(0, 12))) + b"\n"
            tail = bytes(rng.choice(b"a.\n\r") for _ in range(rng.randrange(0, 60))) + b"\n"
            encoded = body.Body(head, tail)
            wire = b"".join(encoded.pieces()) + b".\r\n"
            assert wire == reference_encoding(head + tail), (head, tail)
            assert encoded.size == len(wire)


def test_partial_final_line_is_refused():
    with pytest.raises(PartialFinalLine):
        encode_body(b"a\nno end")
