"""qremote/smtp/replies.py: SMTP replies parsed from bytes as they arrive, bounded."""

from __future__ import annotations

from qremote.smtp.replies import Reply, ReplyParser


def test_reply_split_across_reads_and_several_in_one_read():
    p = ReplyParser()
    assert p.feed(b"25") == []
    assert p.feed(b"0-a\r\n250 b\r\n354 go") == [Reply(250, b"250-a\n250 b\n")]
    assert p.partial
    assert p.feed(b"\r\n") == [Reply(354, b"354 go\n")]
    assert not p.partial


def test_reply_text_is_cut_at_5000_bytes_but_parsing_goes_on():
    p = ReplyParser()
    [r] = p.feed(b"250-" + b"a" * 6000 + b"\r\n250 end\r\n")
    assert r.code == 250 and len(r.text) == 5000


def test_non_digit_code_is_zero():
    assert ReplyParser().feed(b"hello\r\n")[0].code == 0
    assert ReplyParser().feed(b"\r\n")[0].code == 0


def test_lines_keep_ehlo_keywords():
    [r] = ReplyParser().feed(b"250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\n")
    assert r.lines == (b"250-mx", b"250-PIPELINING", b"250 SIZE 100")
