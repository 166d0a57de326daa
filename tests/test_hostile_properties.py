"""The house rules, held against generated hostility (hypothesis).

A conversation is generated phase by phase: for each command, what the server answers
(a proper reply, a refusal, garbage, a code with four digits), split into pieces, with
extra replies nobody asked for, then carrying on, hanging up, stalling or flooding.
Whatever it is, qmail-remote must exit 0, write only well-formed reports, never say K
unless the server sent a 2xx after it received the final dot, never bounce a recipient
unless the server sent a 5xx, and finish in bounded time and memory.

The same for the pieces fed straight from outside: the reply parser on arbitrary bytes
in arbitrary splits, the message parser and signer on arbitrary messages, and the verify
filter on arbitrary header fields (the message always reaches qmail-queue intact).

Examples are drawn at random locally; in CI (CI set) the same ones each run, so a red
build is reproducible and never flaky.
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qremote import limits
from qremote.signing.keys import KeyStore
from qremote.signing.sign import SignConfig, Unsignable, sign_message
from qremote.smtp.replies import ReplyParser, ReplyTooLong
from tests.support import keys
from tests.support.hostile import HostileServer, Step
from tests.support.queue import StandInQueue

CI = bool(os.environ.get("CI"))
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    derandomize=CI,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

RSS_BOUND_KB = 100 * 1024
TIMEOUT_REMOTE = 1
TIME_BOUND = 25.0
"""Seconds: a hang check with room for a loaded machine (each reply may take
timeoutremote, and a conversation has under ten), never a speed test."""

GOOD = {
    "greeting": b"220 hostile.test ESMTP\r\n",
    "EHLO": b"250-hostile.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
    "HELO": b"250 hostile.test\r\n",
    "MAIL": b"250 ok\r\n",
    "RCPT0": b"250 ok\r\n",
    "RCPT1": b"250 ok\r\n",
    "DATA": b"354 go ahead\r\n",
    "dot": b"250 queued\r\n",
}
OTHER = [
    b"421 closing\r\n",
    b"451 later\r\n",
    b"550 no\r\n",
    b"554-no\r\n554 really not\r\n",
    b"2500 looks good\r\n",
    b"250-ok\r\n550 but no\r\n",
    b"250\r\n",
    b"xyz not a reply\r\n",
    b"\r\n",
    b"354 go\r\n",
    b"250-no end",
]
EXTRA = [b"", b"", b"", b"250 early\r\n", b"550 early\r\n", b"2"]
THEN = ["continue"] * 8 + ["close", "stall", "flood"]


@st.composite
def steps(draw, phase: str) -> Step:
    reply = draw(st.sampled_from([GOOD[phase]] * 3 + OTHER))
    data = reply + draw(st.sampled_from(EXTRA))
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=3)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    then = draw(st.sampled_from(THEN))
    flood = draw(st.sampled_from([b"250-x\r\n", b"x" * 500 + b"\r\n"]))
    return Step(tuple(p for p in pieces if p), then, flood=flood)


@st.composite
def conversations(draw) -> dict[str, Step]:
    script = {}
    for phase in GOOD:
        if draw(st.integers(0, 3)) == 0:  # most phases misbehave only now and then
            script[phase] = draw(steps(phase))
    return script


def _verdicts(output: bytes, recipients: int) -> set[bytes]:
    """What qmail-send does with each recipient (qmail-rspawn's reading: ``s`` and ``h``
    stand, ``r`` takes the message's letter); fails the test unless the output has
    qmail's form: a report for each recipient answered so far (qmail's too stop where
    the connection did), then one for the message."""
    assert output.endswith(b"\0"), output
    reports = output.split(b"\0")[:-1]
    assert 1 <= len(reports) <= recipients + 1, output
    assert all(reports), output
    assert all(r[:1] in (b"r", b"h", b"s") for r in reports[:-1]), output
    message = reports[-1][:1]
    assert message in (b"K", b"Z", b"D"), output
    letters = [r[:1] for r in reports[:-1]]
    letters += [b"r"] * (recipients - len(letters))
    return {{b"r": message, b"s": b"Z", b"h": b"D"}[x] for x in letters}


@pytest.fixture
def quick_home(home):
    home.write("timeoutremote", f"{TIMEOUT_REMOTE}\n")
    home.write("timeoutconnect", "2\n")
    return home


@PROPERTY
@given(script=conversations())
def test_any_conversation_keeps_the_house_rules(quick_home, script):
    rcpts = ["b@example.net", "c@example.net"]
    with HostileServer(script) as mx:
        run = quick_home.deliver_standalone(
            f"[{mx.ip}]", "a@example.org", rcpts, b"Subject: t\n\nbody\n", measure_memory=True
        )
    assert run.status == 0
    verdicts = _verdicts(run.output, len(rcpts))
    if b"K" in verdicts:
        after = mx.sent_after_dot()
        assert re.match(rb"2\d\d[ \r\n]", after), (script, run.output, after)
    if b"D" in verdicts:
        assert re.search(rb"(^|\n)5\d\d", mx.sent()), (script, run.output)
    assert run.max_rss_kb < RSS_BOUND_KB
    assert run.seconds < TIME_BOUND


# -- the reply parser -----------------------------------------------------------------------


def _parse(data: bytes, cuts: list[int]) -> tuple[list, bool]:
    parser = ReplyParser()
    out: list = []
    try:
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            out += parser.feed(data[a:b])
    except ReplyTooLong:
        return out, True
    return out, False


@settings(max_examples=300, derandomize=CI, database=None)
@given(
    data=st.one_of(
        st.binary(max_size=3000),
        st.lists(
            st.sampled_from([b"250-", b"250 ", b"2500", b"\r\n", b"\n", b"x", b"554", b"\r"]),
            max_size=400,
        ).map(b"".join),
    ),
    cuts=st.lists(st.integers(0, 3000), max_size=6),
)
def test_reply_parser_on_any_bytes(data, cuts):
    cuts = sorted(c for c in set(cuts) if 0 < c < len(data))
    whole = _parse(data, [])
    assert _parse(data, cuts) == whole  # how the bytes arrive never matters
    for reply in whole[0]:
        assert reply.code == 0 or 100 <= reply.code <= 599
        assert len(reply.text) <= limits.REPLY_TEXT_KEEP
        assert len(reply.lines) <= limits.REPLY_MAX_LINES
        if reply.code:
            assert all(line[:3] == str(reply.code).encode() for line in reply.lines)


# -- the message parser and signer ------------------------------------------------------------


@pytest.fixture(scope="module")
def key_store(tmp_path_factory):
    control = str(tmp_path_factory.mktemp("signer"))
    keys.write_key(control, "example.com", "s1")
    return KeyStore(os.path.join(control, "domainkeys"))


HEADERISH = st.lists(
    st.one_of(
        st.sampled_from(
            [b"From: a@example.com", b"Subject: x", b" folded", b"\tfolded", b"", b"no colon",
             b":", b"From:", b"From: <@>", b"Sender: b@example.com", b"DKIM-Signature: v=1"]
        ),
        st.binary(max_size=40),
    ),
    max_size=12,
).map(lambda lines: b"\n".join(lines))


@settings(max_examples=300, derandomize=CI, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.one_of(HEADERISH, st.binary(max_size=500)), bounce=st.booleans())
def test_signer_on_any_message(key_store, message, bounce):
    """Either signed, or a note saying why not, or (only when the site asked for it) a
    refusal: never a crash that would turn into a retry that cannot succeed."""
    config = SignConfig(unsignable="bounce" if bounce else "send")
    try:
        signed = sign_message(message, b"a@example.com", key_store, config, now=1_800_000_000)
    except Unsignable:
        assert bounce
        return
    assert signed.note.startswith(("Signed: ", "Not signed: "))


# -- the verify filter ----------------------------------------------------------------------

AR_FORMS = st.sampled_from(
    [b"mx.example.org", b'"mx.example.org"', b"(c) mx.example.org", b"MX.EXAMPLE.ORG",
     b'"mx.example\\.org"', b"other.example", b'"mx.example.org', b"(unclosed mx.example.org"]
)


@settings(max_examples=25, deadline=None, derandomize=CI, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    head=HEADERISH,
    forged=st.lists(AR_FORMS, max_size=3),
    body=st.binary(max_size=200),
)
def test_verify_filter_passes_any_message_on_intact(home, tmp_path, head, forged, body):
    home.write("me", "mx.example.org\n")
    fields = b"".join(b"Authentication-Results: " + f + b"; dkim=pass\n" for f in forged)
    message = fields + head + b"\n\n" + body
    q = StandInQueue(str(tmp_path)).run(home.path, message, b"Fa@b\0Tc@d\0\0")
    assert q.status == 0, q.log
    assert q.message is not None and q.message.startswith(b"Authentication-Results: ")
    renamed = q.message.count(b"X-Original-") - message.count(b"X-Original-")
    rest = q.message[len(q.message) - len(message) - 11 * renamed :]
    assert q.message[: -len(rest) or None].endswith(b"\n")
    assert rest.replace(b"X-Original-", b"") == message.replace(b"X-Original-", b"")
    for form in forged:
        if form.count(b'"') == 1 or form.startswith(b"(unclosed"):
            continue  # not an authserv-id at all: an RFC 8601 reader rejects the field
        unquoted = form.replace(b"\\", b"").strip(b'"').lower().replace(b"(c) ", b"")
        if unquoted == b"mx.example.org":
            assert b"X-Original-Authentication-Results: " + form in rest
