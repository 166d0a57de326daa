"""The SMTP conversation (qremote/smtp/conversation.py) fed replies, without sockets:
qmail-remote.c's outcome table row by row, the RFC 2821 greeting rules, STARTTLS, RSET
on a kept connection, and a server that breaks the protocol. The same rows run over
real connections in test_outcomes.py and test_hostile_peers.py."""

from __future__ import annotations

import pytest

from qremote.smtp.conversation import (
    Conversation,
    Envelope,
    Finished,
    NextHost,
    RecipientReport,
    Send,
    SendBody,
    Setup,
    Stale,
    StartTLS,
    State,
)
from qremote.smtp.replies import Reply, ReplyParser


def r(text: bytes) -> Reply:
    [reply] = ReplyParser().feed(text)
    return reply


def conv(*recipients: bytes, **kw) -> Conversation:
    env = Envelope("me.example", b"a@x", list(recipients or [b"b@y"]), size=42)
    return Conversation("192.0.2.1", env, Setup(**kw))


def test_plain_conversation_step_by_step():
    c = conv(b"b@y", b"c@y")
    assert c.receive(r(b"220 hi\r\n")) == [Send(b"EHLO me.example\r\n")]
    assert c.receive(r(b"250-mx\r\n250 SIZE 100\r\n")) == [Send(b"MAIL FROM:<a@x> SIZE=42\r\n")]
    assert c.receive(r(b"250 ok\r\n")) == [Send(b"RCPT TO:<b@y>\r\n")]
    assert c.receive(r(b"550 no\r\n")) == [
        RecipientReport(0, b"h192.0.2.1 does not like recipient.\nRemote host said: 550 no\n"),
        Send(b"RCPT TO:<c@y>\r\n"),
    ]
    assert c.receive(r(b"250 ok\r\n")) == [RecipientReport(1, b"r"), Send(b"DATA\r\n")]
    assert c.receive(r(b"354 go\r\n")) == [SendBody()]
    assert not c.critical
    c.dot_sending()
    assert c.critical
    assert c.receive(r(b"250 queued\r\n")) == [
        Send(b"QUIT\r\n"),
        Finished(b"K192.0.2.1 accepted message.\nRemote host said: 250 queued\n"),
    ]
    assert not c.critical


def test_pipelined_envelope_goes_in_one_write():
    c = conv(b"b@y", b"c@y")
    c.receive(r(b"220 hi\r\n"))
    acts = c.receive(r(b"250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n"))
    assert acts == [Send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\n")]
    assert c.receive(r(b"250 ok\r\n")) == []
    assert c.receive(r(b"250 ok\r\n")) == [RecipientReport(0, b"r")]
    assert c.receive(r(b"250 ok\r\n")) == [RecipientReport(1, b"r")]
    assert c.receive(r(b"354 go\r\n")) == [SendBody()]


def test_eight_bit_body_is_declared_when_offered():
    c = conv()
    c.envelope.eight_bit = True
    c.receive(r(b"220 hi\r\n"))
    assert c.receive(r(b"250-mx\r\n250 8BITMIME\r\n")) == [
        Send(b"MAIL FROM:<a@x> BODY=8BITMIME\r\n")
    ]


def test_greeting_refusal_asks_for_the_next_host():
    acts = conv().receive(r(b"554 no\r\n"))
    assert acts == [
        Send(b"QUIT\r\n"),
        NextHost(b"DConnected to 192.0.2.1 but greeting failed.\nRemote host said: 554 no\n", True),
    ]


def test_starttls_then_ehlo_again_forgetting_extensions():
    c = conv(want_tls=True)
    c.receive(r(b"220 hi\r\n"))
    assert c.receive(r(b"250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n")) == [Send(b"STARTTLS\r\n")]
    assert c.receive(r(b"220 go ahead\r\n")) == [StartTLS()]
    assert c.tls_started() == [Send(b"EHLO me.example\r\n")]
    assert not c.extensions.pipelining
    assert c.receive(r(b"250 mx\r\n")) == [Send(b"MAIL FROM:<a@x>\r\n")]


def test_required_tls_without_starttls_offered_is_temporary():
    c = conv(want_tls=True, require_tls=True)
    c.receive(r(b"220 hi\r\n"))
    acts = c.receive(r(b"250 mx\r\n"))
    assert isinstance(acts[-1], Finished) and acts[-1].report.startswith(b"Z")


GIVING_UP = b"DGiving up on 192.0.2.1.\n"
PROBED = b"KConnected to 192.0.2.1; ready for MAIL, which was not sent (a check).\n"


def envelope_done(c: Conversation) -> None:
    """Greeting and EHLO without extensions: MAIL has been sent."""
    c.receive(r(b"220 hi\r\n"))
    c.receive(r(b"250 mx\r\n"))


def said(text: bytes) -> bytes:
    """qmail's quotation of the server's reply, as it ends a report."""
    return b"Remote host said: " + text + b"\n"


@pytest.mark.parametrize(
    "reply,letter",
    [(b"550 no such sender", b"D"), (b"451 try later", b"Z"), (b"354 what", b"Z")],
)
def test_a_refused_sender_ends_it_d_for_5xx_z_otherwise(reply, letter):
    c = conv()
    envelope_done(c)
    assert c.receive(r(reply + b"\r\n")) == [
        Send(b"QUIT\r\n"),
        Finished(letter + b"Connected to 192.0.2.1 but sender was rejected.\n" + said(reply)),
    ]
    assert c.state is State.DONE


@pytest.mark.parametrize(
    "reply,letter", [(b"554 no data", b"D"), (b"451 later", b"Z"), (b"250 odd", b"Z")]
)
def test_data_not_answered_354_ends_it_d_for_5xx_z_otherwise(reply, letter):
    c = conv()
    envelope_done(c)
    c.receive(r(b"250 ok\r\n"))
    c.receive(r(b"250 ok\r\n"))
    assert c.receive(r(reply + b"\r\n")) == [
        Send(b"QUIT\r\n"),
        Finished(letter + b"192.0.2.1 failed on DATA command.\n" + said(reply)),
    ]


@pytest.mark.parametrize(
    "reply,letter", [(b"250 ok", b"K"), (b"554 spam", b"D"), (b"451 later", b"Z")]
)
def test_the_reply_to_the_dot_is_the_message_report(reply, letter):
    c = conv()
    envelope_done(c)
    for answer in (b"250 ok", b"250 ok", b"354 go"):
        c.receive(r(answer + b"\r\n"))
    verb = b" accepted message" if letter == b"K" else b" failed after I sent the message"
    assert c.receive(r(reply + b"\r\n")) == [
        Send(b"QUIT\r\n"),
        Finished(letter + b"192.0.2.1" + verb + b".\n" + said(reply)),
    ]


def test_no_recipient_accepted_gives_up_on_the_host():
    c = conv(b"b@y", b"c@y")
    envelope_done(c)
    c.receive(r(b"250 ok\r\n"))
    refused = c.receive(r(b"550 no\r\n"))
    assert refused[0] == RecipientReport(
        0, b"h192.0.2.1 does not like recipient.\n" + said(b"550 no")
    )
    actions = c.receive(r(b"450 later\r\n"))
    later = b"s192.0.2.1 does not like recipient.\n" + said(b"450 later")
    assert actions == [RecipientReport(1, later), Send(b"QUIT\r\n"), Finished(GIVING_UP)]


def test_ehlo_refused_falls_back_to_helo():
    c = conv()
    c.receive(r(b"220 hi\r\n"))
    assert c.receive(r(b"502 what\r\n")) == [Send(b"HELO me.example\r\n")]
    assert c.receive(r(b"250 hello\r\n")) == [Send(b"MAIL FROM:<a@x>\r\n")]


def test_a_refused_helo_tries_the_next_host_and_never_bounces():
    c = conv()
    c.receive(r(b"220 hi\r\n"))
    c.receive(r(b"502 what\r\n"))
    assert c.receive(r(b"550 bad name\r\n")) == [
        Send(b"QUIT\r\n"),
        NextHost(
            b"ZConnected to 192.0.2.1 but my name was rejected.\n" + said(b"550 bad name"),
            False,
        ),
    ]


def test_a_4xx_greeting_tries_the_next_host_temporarily():
    acts = conv().receive(r(b"421 busy\r\n"))
    assert acts[-1] == NextHost(
        b"ZConnected to 192.0.2.1 but greeting failed.\n" + said(b"421 busy"), False
    )


def test_ehlo_refused_after_starttls_is_a_broken_server():
    c = conv(want_tls=True)
    c.receive(r(b"220 hi\r\n"))
    c.receive(r(b"250-mx\r\n250 STARTTLS\r\n"))
    c.receive(r(b"220 go\r\n"))
    c.tls_started()
    acts = c.receive(r(b"502 no\r\n"))
    assert acts[-1] == Finished(
        b"ZConnected to 192.0.2.1 but EHLO after STARTTLS failed.\n" + said(b"502 no")
    )


def test_starttls_refused_goes_on_in_plain_text_unless_tls_is_required():
    c = conv(want_tls=True)
    c.receive(r(b"220 hi\r\n"))
    c.receive(r(b"250-mx\r\n250 STARTTLS\r\n"))
    assert c.receive(r(b"454 not now\r\n")) == [Send(b"MAIL FROM:<a@x>\r\n")]
    c = conv(want_tls=True, require_tls=True)
    c.receive(r(b"220 hi\r\n"))
    c.receive(r(b"250-mx\r\n250 STARTTLS\r\n"))
    acts = c.receive(r(b"454 not now\r\n"))
    assert acts[-1] == Finished(
        b"ZConnected to 192.0.2.1 but STARTTLS was refused.\n" + said(b"454 not now")
    )


def test_a_probe_stops_before_mail():
    c = conv(probe=True)
    acts = c.receive(r(b"220 hi\r\n")) and c.receive(r(b"250 mx\r\n"))
    assert acts == [
        Send(b"QUIT\r\n"),
        Finished(PROBED),
    ]


def test_a_kept_connection_starts_with_rset_and_goes_stale_if_refused():
    c = conv(keep_open=True)
    envelope_done(c)
    for answer in (b"250 ok", b"250 ok", b"354 go"):
        c.receive(r(answer + b"\r\n"))
    finished = c.receive(r(b"250 queued\r\n"))
    assert finished == [
        Finished(b"K192.0.2.1 accepted message.\n" + said(b"250 queued"), open=True)
    ]
    assert c.reset(c.envelope) == [Send(b"RSET\r\n")]
    assert c.receive(r(b"421 closing\r\n")) == [Send(b"QUIT\r\n"), Stale()]


def test_a_broken_server_before_the_envelope_sends_us_to_the_next_host():
    c = conv()
    assert c.broken("it replied before it was asked") == NextHost(
        b"ZConnected to 192.0.2.1 but it replied before it was asked. (#4.5.0)\n", False
    )


def test_a_broken_server_after_the_dot_may_have_delivered():
    c = conv()
    envelope_done(c)
    for answer in (b"250 ok", b"250 ok", b"354 go"):
        c.receive(r(answer + b"\r\n"))
    c.dot_sending()
    final = c.broken("it sent a reply without end")
    assert final == Finished(
        b"ZConnected to 192.0.2.1 but it sent a reply without end. Possible duplicate! (#4.5.0)\n"
    )


def test_the_setup_is_separate_from_what_the_conversation_learns():
    c = conv(want_tls=True)
    with pytest.raises(AttributeError):
        c.setup.want_tls = False  # type: ignore[misc]
