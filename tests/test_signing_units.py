"""Canonicalization from the RFCs' own examples, message parsing, and the choice of the
signing domain: pure functions, plain data."""

from __future__ import annotations

import base64
import hashlib
import random
import re

import pytest

from qremote.signing import canon, dkim
from qremote.signing.choose import choose, domain_of, parents
from qremote.signing.message import MalformedMessage, parse

# RFC 6376 section 3.4.6, the example message (header and body).
RFC6376_HEADER = b"A: X\r\nB : Y\t\r\n\tZ  \r\n"
RFC6376_BODY = b" C \r\nD \t E\r\n\r\n\r\n"


def example():
    return parse(RFC6376_HEADER + b"\r\n" + RFC6376_BODY)


def test_rfc6376_relaxed_example():
    msg = example()
    assert b"".join(canon.dkim_header_relaxed(h) for h in msg.headers) == b"a:X\r\nb:Y Z\r\n"
    assert canon.dkim_body_relaxed(msg.body) == b" C\r\nD E\r\n"


def test_rfc6376_simple_example():
    msg = example()
    assert b"".join(canon.dkim_header_simple(h) for h in msg.headers) == RFC6376_HEADER
    assert canon.dkim_body_simple(msg.body) == b" C \r\nD \t E\r\n"


def test_empty_body_hashes_from_rfc6376_errata():
    # Errata 1377: simple empty body is CRLF, relaxed empty body is the empty string.
    def b64(data):
        return base64.b64encode(hashlib.sha256(data).digest())

    assert b64(canon.dkim_body_simple(b"")) == b"frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY="
    assert b64(canon.dkim_body_relaxed(b"")) == b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert canon.dkim_body_relaxed(b"\r\n\r\n") == b""


def test_rfc4870_nofws_removes_all_folding_white_space():
    msg = example()
    assert [canon.dk_header(h, "nofws") for h in msg.headers] == [b"A:X\r\n", b"B:YZ\r\n"]
    # The empty separator line counts as body; trailing empty lines are dropped.
    assert canon.dk_body(msg.body, "nofws") == b"\r\nC\r\nDE\r\n"


def test_rfc4870_simple_keeps_lines_but_drops_trailing_empty_ones():
    msg = example()
    assert [canon.dk_header(h, "simple") for h in msg.headers] == [
        b"A: X\r\n",
        b"B : Y\t\r\n\tZ  \r\n",
    ]
    assert canon.dk_body(msg.body, "simple") == b"\r\n C \r\nD \t E\r\n"
    assert canon.dk_body(b"", "simple") == b""
    assert canon.dk_body(b"\r\n \r\n", "nofws") == b""


# Line-by-line readings of the RFC rules, slow and plain: the canonicalizations above work
# on the whole text at once (and skip passes that have nothing to do), and must agree.


def _lines(body: bytes) -> list[bytes]:
    lines = body.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()  # the text ended with a line end
    return lines


def _drop_empty_tail(lines: list[bytes]) -> list[bytes]:
    while lines and lines[-1] == b"":
        lines = lines[:-1]
    return lines


def reference_dkim_relaxed(body: bytes) -> bytes:
    lines = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in _lines(body)]
    return b"".join(line + b"\r\n" for line in _drop_empty_tail(lines))


def reference_dkim_simple(body: bytes) -> bytes:
    lines = _drop_empty_tail(_lines(body))
    return b"".join(line + b"\r\n" for line in lines) or b"\r\n"


def reference_dk_nofws(body: bytes) -> bytes:
    lines = [line.translate(None, b" \t\r\n") for line in [b"", *_lines(body)]]
    return b"".join(line + b"\r\n" for line in _drop_empty_tail(lines))


def reference_dk_simple(body: bytes) -> bytes:
    lines = _drop_empty_tail([b"", *_lines(body)])
    return b"".join(line + b"\r\n" for line in lines)


def random_bodies(count: int):
    """Wire-form bodies (CRLF line ends, some bare CRs) heavy in what canonicalization
    touches: runs of blanks, blanks before line ends, empty lines at the end."""
    rng = random.Random(6376)
    pieces = [b"a", b"bc", b" ", b"  ", b"\t", b" \t ", b"\r\n", b"\r\n\r\n", b"\r"]
    weights = [6, 4, 4, 2, 2, 1, 4, 1, 1]
    for _ in range(count):
        body = b"".join(rng.choices(pieces, weights, k=rng.randrange(0, 40)))
        yield body.replace(b"\r\r\n", b"\r \r\n")  # keep bare CRs clear of line ends


def test_body_canonicalizations_agree_with_line_by_line_readings_of_the_rfcs():
    for body in random_bodies(3000):
        assert canon.dkim_body_relaxed(body) == reference_dkim_relaxed(body), body
        assert canon.dkim_body_simple(body) == reference_dkim_simple(body), body
        expected = reference_dk_nofws(body)
        assert canon.dk_body(body, "nofws") == expected, body
        bare = b"\r" in body.replace(b"\r\n", b"")
        assert canon.dk_body(body, "nofws", bare) == expected, body
        assert canon.dk_body(body, "simple") == reference_dk_simple(body), body


def test_parse_knows_whether_the_body_has_a_bare_cr():
    for body in random_bodies(500):
        for queued in (body, body.replace(b"\r\n", b"\n")):
            msg = parse(b"From: a@example.com\n\n" + queued)
            assert msg.body == body
            assert msg.bare_cr == (b"\r" in body.replace(b"\r\n", b"")), body


def test_relaxed_header_agrees_with_a_line_by_line_reading():
    rng = random.Random(4870)
    pieces = [b"x", b"Yz", b" ", b"  ", b"\t", b"\r\n ", b"\r\n\t"]
    for _ in range(2000):
        value = b"".join(rng.choices(pieces, k=rng.randrange(0, 12)))
        msg = parse(b"Sub Ject :" + value.lstrip(b"\r\n") + b"\r\n\r\nbody\r\n")
        unfolded = re.sub(rb"\r\n(?=[ \t])", b"", msg.headers[0].value[:-2])
        expected = b"sub ject:" + re.sub(rb"[ \t]+", b" ", unfolded).strip(b" ") + b"\r\n"
        assert canon.dkim_header_relaxed(msg.headers[0]) == expected, value


def test_parse_keeps_lf_and_crlf_as_one_line_end():
    msg = parse(b"Subject: a\n b\r\nTo: x\n\nbody\r\nmore\n")
    assert [h.raw for h in msg.headers] == [b"Subject: a\r\n b\r\n", b"To: x\r\n"]
    assert msg.body == b"body\r\nmore\r\n"


def test_message_without_body_or_without_headers():
    assert parse(b"Subject: x\n").body == b""
    only_body = parse(b"\nhello\n")
    assert only_body.headers == [] and only_body.body == b"hello\r\n"


@pytest.mark.parametrize(
    "message, reason",
    [
        (b" Subject: x\n\nbody\n", "starts with white space"),
        (b"Subject: x\nnot a header\n\nbody\n", "header line 2 is not a header field"),
        (b": no name\n\n", "header line 1"),
    ],
)
def test_malformed_headers_are_named(message, reason):
    with pytest.raises(MalformedMessage, match=reason):
        parse(message)


def test_header_list_oversigns_from_subject_date_to():
    msg = parse(b"From: a@x\nTo: b@y\nTo: c@y\nX-Other: 1\nSubject: s\n\n")
    names = dkim.header_list(msg)
    assert names.count(b"from") == 2 and names.count(b"to") == 3
    assert names.count(b"subject") == 2 and names.count(b"date") == 1
    assert b"x-other" not in names
    picked = dkim.selected(msg, [b"to", b"to", b"to"])
    assert [h.raw for h in picked] == [b"To: c@y\r\n", b"To: b@y\r\n"]


def test_domain_of_addresses_and_header_values():
    assert domain_of(b"Alice <alice@Example.COM>") == "example.com"
    assert domain_of(b" bob@example.net\r\n") == "example.net"
    assert domain_of(b"undisclosed-recipients:;") is None
    assert domain_of(b"") is None
    assert parents("a.b.example.com") == ["a.b.example.com", "b.example.com", "example.com"]


def test_choice_prefers_from_then_parents_then_sender_then_fallback():
    have = {"example.com": ["K1"], "sender.org": ["K2"]}

    def keys_for(domain):
        return have.get(domain, [])

    assert choose("mail.example.com", "sender.org", keys_for, lambda: None) == (
        "example.com",
        ["K1"],
    )
    assert choose("other.net", "sender.org", keys_for, lambda: None) == ("sender.org", ["K2"])
    assert choose("other.net", None, keys_for, lambda: "SITE") == ("other.net", ["SITE"])
    assert choose("other.net", None, keys_for, lambda: None) is None
