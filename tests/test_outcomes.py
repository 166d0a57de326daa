"""qmail's outcome table, row by row, against a real SMTP server: exact report bytes.

Each row scripts one reply of a real aiosmtpd server on its own loopback address and
checks every byte qmail-remote writes, plus what qmail-rspawn makes of it.
"""

from __future__ import annotations

import pytest

from tests.support.expect import UNSIGNED
from tests.support.smtpserver import CLOSE, STALL, Script, ScriptedServer

MSG = b"Subject: t\n\nbody\n"


def deliver(home, zone, script: Script, recipients=("b@example.net",), **server):
    with ScriptedServer(script, **server) as mx:
        zone.mx("example.net", (10, "mx.example.net"))
        zone.a("mx.example.net", mx.ip)
        run = home.deliver("example.net", "a@example.org", list(recipients), MSG)
    assert run.status == 0
    return mx, run


def said(text: str) -> bytes:
    return b"Remote host said: " + text.encode() + b"\n"


@pytest.mark.parametrize(
    "reply, letter",
    [("554 5.7.1 go away", b"D"), ("421 4.3.2 busy", b"Z")],
)
def test_greeting_refused_by_the_only_host(home, zone, reply, letter):
    mx, run = deliver(home, zone, Script(greeting=reply))
    ip = mx.ip.encode()
    assert (
        run.output
        == letter
        + b"Connected to "
        + ip
        + b" but greeting failed.\n"
        + said(reply)
        + UNSIGNED
        + b"\0"
    )
    assert mx.received == []


@pytest.mark.parametrize("helo_reply", ["550 who are you", "421 not now"])
def test_helo_refused_after_ehlo_refused_is_temporary(home, zone, helo_reply):
    mx, run = deliver(home, zone, Script(ehlo="502 no ehlo", helo=helo_reply))
    assert run.output == (
        b"ZConnected to "
        + mx.ip.encode()
        + b" but my name was rejected.\n"
        + said(helo_reply)
        + UNSIGNED
        + b"\0"
    )
    assert [c.split()[0] for c in mx.connections[0].commands] == ["EHLO", "HELO"]


def test_helo_fallback_when_ehlo_refused_delivers(home, zone):
    mx, run = deliver(home, zone, Script(ehlo="500 what"))
    assert run.output.startswith(b"r\0K" + mx.ip.encode() + b" accepted message.\n")
    assert mx.connections[0].commands[1] == "HELO me.example.org"
    # HELO means no ESMTP: no SIZE or BODY parameters on MAIL.
    assert mx.connections[0].commands[2] == "MAIL <a@example.org>"


@pytest.mark.parametrize(
    "reply, letter", [("553 5.1.8 bad sender", b"D"), ("451 4.1.8 try later", b"Z")]
)
def test_mail_refused(home, zone, reply, letter):
    mx, run = deliver(home, zone, Script(mail=reply))
    assert run.output == (
        letter
        + b"Connected to "
        + mx.ip.encode()
        + b" but sender was rejected.\n"
        + said(reply)
        + UNSIGNED
        + b"\0"
    )


@pytest.mark.parametrize("pipelining", [True, False])
def test_recipients_get_one_report_each_in_order(home, zone, pipelining):
    script = Script(rcpt=["250 ok", "550 5.1.1 no such user", "450 4.2.0 full"])
    if not pipelining:
        script.extensions = ["SIZE 1000000", "8BITMIME"]
    mx, run = deliver(
        home, zone, script, recipients=("x@example.net", "y@example.net", "z@example.net")
    )
    ip = mx.ip.encode()
    assert run.reports == [
        b"r",
        b"h" + ip + b" does not like recipient.\n" + said("550 5.1.1 no such user"),
        b"s" + ip + b" does not like recipient.\n" + said("450 4.2.0 full"),
        b"K" + ip + b" accepted message.\n" + said("250 2.0.0 Ok: queued as 1234") + UNSIGNED,
    ]
    [got] = mx.received
    assert got.rcpt_tos == ["x@example.net"]


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(
    "reply, letter, qmail_letter",
    [("550 5.1.1 unknown", b"h", b"D"), ("451 4.3.0 later", b"s", b"Z")],
)
def test_no_recipient_accepted_gives_up(home, zone, reply, letter, qmail_letter, pipelining):
    script = Script(rcpt=reply)
    if not pipelining:
        script.extensions = ["SIZE 1000000"]
    mx, run = deliver(home, zone, script)
    ip = mx.ip.encode()
    assert run.output == (
        letter
        + ip
        + b" does not like recipient.\n"
        + said(reply)
        + b"\0"
        + b"DGiving up on "
        + ip
        + b".\n"
        + UNSIGNED
        + b"\0"
    )
    assert run.qmail[:1] == qmail_letter
    assert mx.received == []


@pytest.mark.parametrize("reply, letter", [("554 5.5.1 no", b"D"), ("451 4.3.0 no", b"Z")])
def test_data_refused(home, zone, reply, letter):
    mx, run = deliver(home, zone, Script(data=reply))
    assert run.output == (
        b"r\0"
        + letter
        + mx.ip.encode()
        + b" failed on DATA command.\n"
        + said(reply)
        + UNSIGNED
        + b"\0"
    )


@pytest.mark.parametrize("reply, letter", [("554 5.7.1 spam", b"D"), ("452 4.3.1 disk full", b"Z")])
def test_refused_after_the_dot(home, zone, reply, letter):
    mx, run = deliver(home, zone, Script(dot=reply))
    assert run.output == (
        b"r\0"
        + letter
        + mx.ip.encode()
        + b" failed after I sent the message.\n"
        + said(reply)
        + UNSIGNED
        + b"\0"
    )


def test_multiline_reply_is_quoted_whole(home, zone):
    mx, run = deliver(home, zone, Script(dot="250-first line\r\n250-second\r\n250 third"))
    assert run.reports[-1] == (
        b"K" + mx.ip.encode() + b" accepted message.\n"
        b"Remote host said: 250-first line\n250-second\n250 third\n" + UNSIGNED
    )


STEPS_BEFORE_DOT = ["greeting", "ehlo", "helo", "mail", "rcpt", "data"]


def at(step: str, action) -> Script:
    """A script that does ``action`` at ``step`` (HELO is reached by refusing EHLO)."""
    if step == "helo":
        return Script(ehlo="502 no", helo=action)
    return Script(**{step: action})


@pytest.mark.parametrize("step", STEPS_BEFORE_DOT)
def test_connection_closed_before_the_dot_is_not_a_duplicate(home, zone, step):
    mx, run = deliver(home, zone, at(step, CLOSE))
    # As in qmail, recipient reports already earned are printed before the failure.
    before = b"r\0" if step == "data" else b""
    assert run.output == (
        before
        + b"ZConnected to "
        + mx.ip.encode()
        + b" but connection died. (#4.4.2)\n"
        + UNSIGNED
        + b"\0"
    )


def test_connection_closed_after_the_dot_may_be_a_duplicate(home, zone):
    mx, run = deliver(home, zone, Script(dot=CLOSE))
    assert run.output == (
        b"r\0ZConnected to "
        + mx.ip.encode()
        + b" but connection died. Possible duplicate! (#4.4.2)\n"
        + UNSIGNED
        + b"\0"
    )


@pytest.mark.parametrize("step", [*STEPS_BEFORE_DOT, "dot"])
def test_stalled_server_times_out_after_timeoutremote(home, zone, step):
    home.write("timeoutremote", "1\n")
    mx, run = deliver(home, zone, at(step, STALL))
    dup = b"Possible duplicate! " if step == "dot" else b""
    assert run.reports[-1] == (
        b"ZConnected to "
        + mx.ip.encode()
        + b" but connection died. "
        + dup
        + b"(#4.4.2)\n"
        + UNSIGNED
    )
