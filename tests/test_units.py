"""The pure pieces, fed plain data: reply parsing, body encoding, routes, control files,
and the conversation state machine without any socket."""

from __future__ import annotations

import random

import pytest

from qremote.control import ControlDir, ControlError, parse_map
from qremote.routing import routes
from qremote.routing.mx import Target, order, usable
from qremote.smtp.body import PartialFinalLine, encode_body
from qremote.smtp.replies import Reply, ReplyParser

# -- replies -----------------------------------------------------------------------------


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


# -- body ---------------------------------------------------------------------------------


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


# -- routes and MX -------------------------------------------------------------------------


def test_smtproutes_walk_order():
    assert routes.suffixes("a.b.c") == ["a.b.c", ".b.c", ".c", ""]
    table = parse_map(["#x", ".b.c:relay1", "A.B.C:relay2:26", ":default"])
    assert routes.route_for("a.b.c", table) == routes.Route("relay2", 26)
    assert routes.route_for("x.b.c", table) == routes.Route("relay1", 25)
    assert routes.route_for("other", table) == routes.Route("default", 25)
    assert routes.route_for("other", parse_map(["x:y"])) is None


def test_smtproutes_bad_port_and_brackets():
    with pytest.raises(routes.RouteError):
        routes.parse_route("relay:http")
    with pytest.raises(routes.RouteError):
        routes.parse_route("[::1")
    assert routes.parse_route("[2001:db8::1]:587") == routes.Route("2001:db8::1", 587)
    assert routes.parse_route(":26") is None


def test_mx_order_sorts_and_shuffles_equals():
    seen = set()
    for seed in range(30):
        got = order([(20, "c"), (10, "a"), (10, "b")], random.Random(seed))
        assert got[2] == (20, "c")
        seen.add(tuple(got[:2]))
    assert seen == {((10, "a"), (10, "b")), ((10, "b"), (10, "a"))}


def test_ipme_keeps_only_better_exchangers():
    t = [Target("1.1.1.1", 5, "a"), Target("127.0.0.1", 10, "me"), Target("2.2.2.2", 10, "b")]
    assert usable(t, {"127.0.0.1"}, routed=False) == t[:1]
    assert usable(t[1:], {"127.0.0.1"}, routed=False) is None
    assert usable(t[1:], {"127.0.0.1"}, routed=True) == t[1:]


# -- control files ---------------------------------------------------------------------------


def test_control_rules(tmp_path):
    (tmp_path / "me").write_text("host.example  \nsecond\n")
    (tmp_path / "timeoutremote").write_text("30\n")
    (tmp_path / "timeoutconnect").write_text("soon\n")
    (tmp_path / "locals").write_text("# c\n\na\n b\n")
    c = ControlDir(str(tmp_path))
    assert c.line("me") == "host.example"
    assert c.line("missing") is None
    assert c.integer("timeoutremote", 1200) == 30
    assert c.integer("missing", 7) == 7
    with pytest.raises(ControlError, match="timeoutconnect"):
        c.integer("timeoutconnect", 60)
    assert c.listing("locals") == ["a", " b"]


def test_map_is_case_insensitive_and_later_lines_win():
    assert parse_map(["Example.COM:a", "example.com:b", "x"]) == {"example.com": "b", "x": ""}


def test_the_thin_clients_usage_text_is_qmails():
    from qremote import report
    from qremote.cli import qmail_remote

    assert qmail_remote.USAGE == report.USAGE + b"\0"
