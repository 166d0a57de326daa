"""A message handed to the installed qmail-remote arrives intact through MX lookup."""

from tests.support.expect import UNSIGNED
from tests.support.smtpserver import ScriptedServer

MESSAGE = b"From: a@example.org\nTo: b@example.net\nSubject: hi\n\nline one\n.leading dot\nend\n"


def test_delivers_through_mx_lookup_and_arrives_intact(home, zone):
    with ScriptedServer() as mx:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", mx.ip)
        run = home.deliver("example.net", "a@example.org", ["b@example.net"], MESSAGE)
    assert run.status == 0
    assert run.output == (
        b"r\0K" + mx.ip.encode() + b" accepted message.\n"
        b"Remote host said: 250 2.0.0 Ok: queued as 1234\n" + UNSIGNED + b"\0"
    )
    assert run.qmail.startswith(b"K")
    [got] = mx.received
    assert got.mail_from == "a@example.org"
    assert got.rcpt_tos == ["b@example.net"]
    assert got.content == MESSAGE.replace(b"\n", b"\r\n")
