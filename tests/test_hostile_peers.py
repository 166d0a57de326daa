"""Broken and hostile servers get the report qmail would give: never a crash, never a
non-zero exit, nothing but reports on the pipe, never a bounce for the server's fault."""

from __future__ import annotations

import pytest

from tests.support.expect import UNSIGNED
from tests.support.hostile import HostileServer, Step
from tests.support.smtpserver import FLOOD, Raw, Script, ScriptedServer

MSG = b"Subject: t\n\nbody\n"


def deliver(home, zone, script: Script):
    with ScriptedServer(script) as mx:
        zone.mx("example.net", (10, "mx.example.net"))
        zone.a("mx.example.net", mx.ip)
        run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.status == 0
    return mx, run


def test_garbage_greeting_is_a_temporary_failure(home, zone):
    mx, run = deliver(home, zone, Script(greeting=Raw(b"\x00\xffHELLO THERE\r\n", "continue")))
    assert run.output == (
        b"ZConnected to " + mx.ip.encode() + b" but greeting failed.\n"
        b"Remote host said: ?\xffHELLO THERE\n" + UNSIGNED + b"\0"
    )


def test_garbage_mail_reply_never_bounces(home, zone):
    mx, run = deliver(home, zone, Script(mail="xyz not a reply"))
    assert run.output == (
        b"ZConnected to " + mx.ip.encode() + b" but sender was rejected.\n"
        b"Remote host said: xyz not a reply\n" + UNSIGNED + b"\0"
    )


def test_garbage_recipient_reply_is_a_soft_refusal(home, zone):
    mx, run = deliver(home, zone, Script(rcpt="9x9 eh?"))
    assert run.reports[0].startswith(b"s" + mx.ip.encode() + b" does not like recipient.\n")
    assert run.qmail.startswith(b"Z")


def test_long_reply_line_is_cut_at_5000_bytes(home, zone):
    huge = b"554 " + b"x" * 60000 + b"\r\n"
    mx, run = deliver(home, zone, Script(dot=Raw(huge, "continue")))
    head = b"r\0D" + mx.ip.encode() + b" failed after I sent the message.\nRemote host said: "
    # qmail keeps 5000 bytes of text; the cut line gets a line end before our own note.
    assert run.output == head + b"554 " + b"x" * 4996 + b"\n" + UNSIGNED + b"\0"


def test_reply_of_megabytes_after_the_dot_is_a_temporary_failure(home, zone):
    huge = b"554 " + b"x" * (3 << 20) + b"\r\n"
    mx, run = deliver(home, zone, Script(dot=Raw(huge, "continue")))
    assert run.output == (
        b"r\0ZConnected to " + mx.ip.encode() + b" but it sent a reply of more than 65536 "
        b"bytes. Possible duplicate! (#4.5.0)\n" + UNSIGNED + b"\0"
    )


def test_megabyte_greeting_is_a_temporary_failure_and_nothing_is_sent(home, zone):
    mx, run = deliver(
        home, zone, Script(greeting=Raw(b"220 " + b"y" * (2 << 20) + b"\r\n", "continue"))
    )
    assert run.output == (
        b"ZConnected to " + mx.ip.encode() + b" but it sent a reply of more than 65536 "
        b"bytes. (#4.5.0)\n" + UNSIGNED + b"\0"
    )
    assert mx.received == []


def test_multiline_reply_that_never_ends_times_out(home, zone):
    home.write("timeoutremote", "2\n")
    mx, run = deliver(home, zone, Script(ehlo=FLOOD))
    assert (
        run.output
        == b"ZConnected to "
        + mx.ip.encode()
        + b" but connection died. (#4.4.2)\n"
        + UNSIGNED
        + b"\0"
    )


def test_reply_without_crlf_then_close(home, zone):
    mx, run = deliver(home, zone, Script(mail=Raw(b"250 ok but no line end", "close")))
    assert (
        run.output
        == b"ZConnected to "
        + mx.ip.encode()
        + b" but connection died. (#4.4.2)\n"
        + UNSIGNED
        + b"\0"
    )


def test_nul_bytes_in_reply_text_become_question_marks(home, zone):
    mx, run = deliver(home, zone, Script(dot=Raw(b"250 ok\x00queued\r\n", "continue")))
    assert run.reports[-1] == (
        b"K" + mx.ip.encode() + b" accepted message.\nRemote host said: 250 ok?queued\n" + UNSIGNED
    )


# -- byte-level hostility (tests/support/hostile.py) --------------------------------------

RSS_BOUND_KB = 100 * 1024
"""qmail-remote's peak memory under any flood (about 30 MB is usual); an unbounded reply
took 1 GB in 5 s."""


def hostile_delivery(home, script: dict[str, Step], message: bytes = MSG, rcpts=None):
    with HostileServer(script) as mx:
        run = home.deliver_standalone(
            f"[{mx.ip}]", "a@example.org", rcpts or ["b@example.net"], message, measure_memory=True
        )
    assert run.status == 0
    return mx, run


@pytest.mark.parametrize(
    "flood,bound",
    [(b"250-x\r\n", "1000 lines"), (b"250-" + b"x" * 2000 + b"\r\n", "65536 bytes")],
)
def test_reply_flood_ends_the_conversation_in_bounded_memory(home, flood, bound):
    mx, run = hostile_delivery(home, {"EHLO": Step((flood,), "flood", flood=flood)})
    assert run.output == (
        b"ZConnected to " + mx.ip.encode() + b" but it sent a reply of more than "
        + bound.encode() + b". (#4.5.0)\n" + UNSIGNED + b"\0"
    )
    assert 0 < run.max_rss_kb < RSS_BOUND_KB
    assert not mx.received_dot


def test_reply_to_the_dot_sent_with_the_354_is_never_taken_as_delivery(home):
    """The server says 354 and 250 in one write, then never answers the dot: under the
    C client's rules this is K; the message was never acknowledged, so it is Z, and the
    dot is never sent."""
    mx, run = hostile_delivery(
        home, {"DATA": Step.reply(b"354 go\r\n250 queued\r\n"), "dot": Step((), "stall")}
    )
    assert run.output == (
        b"r\0ZConnected to " + mx.ip.encode() + b" but it replied before the message was "
        b"sent. (#4.5.0)\n" + UNSIGNED + b"\0"
    )
    assert not mx.received_dot


def test_reply_nobody_asked_for_ends_the_conversation(home):
    """Without PIPELINING, a second reply to MAIL would be read as the reply to RCPT."""
    mx, run = hostile_delivery(
        home,
        {
            "EHLO": Step.reply(b"250 hostile.test\r\n"),
            "MAIL": Step.reply(b"250 ok\r\n250 ok, and you may have this one too\r\n"),
        },
    )
    assert run.output == (
        b"ZConnected to " + mx.ip.encode() + b" but it replied before it was asked. "
        b"(#4.5.0)\n" + UNSIGNED + b"\0"
    )
    assert [e.data[:4] for e in mx.events if e.kind == "recv"] == [b"EHLO", b"MAIL"]


@pytest.mark.parametrize("reply", [b"2500 queued\r\n", b"250queued\r\n", b"250-ok\r\n550 no\r\n"])
def test_reply_that_is_not_a_reply_line_after_the_dot_is_never_k(home, reply):
    mx, run = hostile_delivery(home, {"dot": Step.reply(reply)})
    assert mx.received_dot
    assert run.qmail.startswith(b"Z" + mx.ip.encode() + b" failed after I sent the message.")


def test_greeting_split_into_single_bytes_still_delivers(home):
    greeting = b"220-hostile.test\r\n220 slowly\r\n"
    mx, run = hostile_delivery(
        home, {"greeting": Step(tuple(greeting[i : i + 1] for i in range(len(greeting))))}
    )
    assert run.qmail.startswith(b"K")
