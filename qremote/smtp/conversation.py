"""The SMTP client conversation as a state machine, sans I/O.

Feed it each :class:`~qremote.smtp.replies.Reply` the server sends; it answers with a
list of actions for the driver: bytes to send, "send the message body now", "start TLS
now", recipient reports, and finally one :class:`Finished` outcome. It never touches a
socket, so every row of qmail's outcome table is a unit test away.

Outcomes follow qmail-remote.c's smtp(), with the RFC 2821 greeting patch:
a greeting that is not 220, or a refused HELO, asks the caller to try the next MX
(:class:`NextHost`) instead of failing the message. The regular rows are tables
(:data:`_REFUSED`, :data:`_NEXT_HOST`); every ending goes through one helper that says
QUIT. What the delivery decided for the connection is a frozen :class:`Setup`, apart
from what the conversation learns. ``tests/test_conversation.py`` is the table, row by
row.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto

from qremote import report
from qremote.intl.envelope import Plan, plan_envelope
from qremote.relay import sasl
from qremote.routing.routes import Credentials
from qremote.smtp.replies import Reply


class State(Enum):
    GREETING = auto()
    EHLO = auto()
    HELO = auto()
    STARTTLS = auto()
    AUTH = auto()
    AUTH_CANCEL = auto()
    MAIL = auto()
    RCPT = auto()
    DATA = auto()
    BODY = auto()
    DONE = auto()
    RSET = auto()


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class SendBody:
    """Transmit the encoded message and its final dot, then feed the reply."""


@dataclass(frozen=True)
class StartTLS:
    """The server said 220 to STARTTLS: handshake now, then call :meth:`tls_started`."""


@dataclass(frozen=True)
class RecipientReport:
    index: int
    report: bytes


@dataclass(frozen=True)
class Finished:
    """The message report for this connection; QUIT has already been queued if useful.

    ``open`` is True when QUIT was held back because the connection may carry another
    message (:attr:`Setup.keep_open`); the driver then keeps it or says QUIT.
    """

    report: bytes
    open: bool = False


@dataclass(frozen=True)
class Stale:
    """A kept connection did not take RSET: drop it and connect afresh; nothing of this
    message has been sent."""


@dataclass(frozen=True)
class NextHost:
    """This host refused us before the envelope started: try the next address.

    ``report`` is what to say if no other host does better; ``permanent`` is True for a
    5xx greeting, the only case that may become a bounce (when every host says 5xx).
    """

    report: bytes
    permanent: bool


Action = Send | SendBody | StartTLS | RecipientReport | Finished | NextHost | Stale


@dataclass
class Envelope:
    helo: str
    sender: bytes
    recipients: list[bytes]
    size: int = 0
    eight_bit: bool = False
    utf8_headers: bool = False
    """The header fields hold non-ASCII (an RFC 6532 message): it needs SMTPUTF8."""
    strict_headers: bool = True
    """False (control/utf8headers send): such header fields alone go without SMTPUTF8."""


@dataclass
class Extensions:
    """What EHLO advertised; forgotten after STARTTLS (RFC 3207 section 4.2)."""

    pipelining: bool = False
    size: bool = False
    """SIZE offered: MAIL FROM says the message's size (RFC 1870). The limit it may name
    is not acted on: a server that takes no message that large says so to MAIL or the
    dot, and qmail's outcome table reports that as the server's words."""
    eight_bit_mime: bool = False
    starttls: bool = False
    smtputf8: bool = False
    auth: tuple[str, ...] = ()
    """SASL mechanisms offered (``AUTH ...``, or the old ``AUTH=...`` form)."""

    @classmethod
    def parse(cls, reply: Reply) -> Extensions:
        ext = cls()
        for line in reply.lines[1:]:
            words = line[4:].decode("ascii", "replace").upper().split()
            if not words:
                continue
            keyword = words[0]
            if keyword == "PIPELINING":
                ext.pipelining = True
            elif keyword == "SIZE":
                ext.size = True
            elif keyword == "8BITMIME":
                ext.eight_bit_mime = True
            elif keyword == "STARTTLS":
                ext.starttls = True
            elif keyword == "SMTPUTF8":
                ext.smtputf8 = True
            elif keyword == "AUTH" or keyword.startswith("AUTH="):
                first = keyword[5:] if keyword.startswith("AUTH=") else ""
                more = [first] if first else []
                ext.auth = tuple(dict.fromkeys([*ext.auth, *more, *words[1:]]))
        return ext


@dataclass(frozen=True)
class Account:
    """SMTP AUTH on this connection: whose account, which mechanism if the route names
    one, and which route line configured it (for reports)."""

    credentials: Credentials
    mechanism: str | None
    where: str


@dataclass(frozen=True)
class Setup:
    """What the delivery decided for this connection; it never changes while it lives."""

    want_tls: bool = False
    """Ask for STARTTLS when the server offers it (the TLS policy decides this)."""
    require_tls: bool = False
    """Fail (temporarily) rather than send in plain text."""
    keep_open: bool = False
    """Hold back QUIT after the server answers the final dot, so a long-lived process
    can send the next message over this connection (see :meth:`Conversation.reset`)."""
    login: Account | None = None
    """Authenticate (only ever inside TLS) before the envelope."""
    route: str | None = None
    """The route line that sent us to this relay (None for an MX): named when the relay
    wants authentication and has none configured."""
    probe: bool = False
    """Stop before MAIL: ``qremote check --route`` tests TLS and AUTH without sending."""


_REFUSED = {
    State.MAIL: ("Connected to ", " but sender was rejected"),
    State.DATA: ("", " failed on DATA command"),
}
"""qmail's words when MAIL or DATA is refused: ``D`` for 5xx, ``Z`` for anything else
that is not what the command asks for (2xx for MAIL, 3xx for DATA)."""

_NEXT_HOST = {
    State.GREETING: (" but greeting failed", True),
    State.HELO: (" but my name was rejected", False),
}
"""A greeting or HELO refused: the next address is tried; only a 5xx greeting may bounce
(when every host gives one), a refused HELO says more about our name than about the
recipient."""


@dataclass
class Conversation:
    """One SMTP session with one server for one message: the setup, then what it has
    learnt and where it stands."""

    partner: str
    envelope: Envelope
    setup: Setup = Setup()
    state: State = State.GREETING
    extensions: Extensions = field(default_factory=Extensions)
    tls: bool = False
    critical: bool = False
    """True between the final dot and its reply: a lost connection may mean a duplicate."""
    accepted: int = 0
    authenticated: str | None = None
    """``user (MECH)`` once the relay said 235; kept for a kept connection's messages."""
    _mechanism: sasl.Mechanism | None = None
    _who: str = ""
    _auth_failure: str = ""
    _rcpt_index: int = 0
    raw_headers: bool = False
    """Header fields that are not ASCII went to a server without SMTPUTF8 (as qmail)."""
    eight_bit_unasked: bool = False
    """An 8-bit body went to a server that did not offer 8BITMIME (as qmail sends it)."""
    _plan: Plan | None = None
    """What this server is sent: SMTPUTF8 or a downgrade (see :mod:`qremote.intl`)."""
    _sendable: list[int] = field(default_factory=list)
    """The recipients (by index) this server is asked for, in order."""

    # -- feeding -------------------------------------------------------------------------

    def receive(self, reply: Reply) -> list[Action]:
        handler = _HANDLERS.get(self.state)
        if handler is None:
            return []
        return handler(self, reply)

    def reset(self, envelope: Envelope) -> list[Action]:
        """Start the next message on a connection kept open after :class:`Finished`.

        RSET first (RFC 5321 section 4.1.1.5), on its own: if the connection went stale
        while idle we find out before anything of the new message is sent. What EHLO
        advertised, and the TLS state, still hold.
        """
        self.envelope = envelope
        self.state = State.RSET
        self.accepted = 0
        self.critical = False
        self._rcpt_index = 0
        return [Send(b"RSET\r\n")]

    def tls_started(self) -> list[Action]:
        """The handshake succeeded: say EHLO again and forget what was advertised."""
        self.tls = True
        self.extensions = Extensions()
        return self._ehlo()

    # -- helpers -------------------------------------------------------------------------

    def _end(self, final: Finished | NextHost | Stale) -> list[Action]:
        """The conversation ends here: QUIT, and what it came to."""
        self.state = State.DONE
        return [Send(b"QUIT\r\n"), final]

    def _quit(self, letter: str, prefix: str, append: str, reply: Reply) -> list[Action]:
        text = report.quit_report(letter, prefix, self.partner, append, reply.text)
        return self._end(Finished(text))

    def _refused(self, reply: Reply) -> list[Action]:
        """MAIL or DATA refused (:data:`_REFUSED`)."""
        prefix, append = _REFUSED[self.state]
        return self._quit("D" if reply.permanent else "Z", prefix, append, reply)

    def _next_host(self, reply: Reply) -> list[Action]:
        """The greeting or HELO refused (:data:`_NEXT_HOST`)."""
        append, may_bounce = _NEXT_HOST[self.state]
        permanent = may_bounce and reply.permanent
        letter = "D" if permanent else "Z"
        text = report.quit_report(letter, "Connected to ", self.partner, append, reply.text)
        return self._end(NextHost(text, permanent))

    def _ehlo(self) -> list[Action]:
        self.state = State.EHLO
        return [Send(f"EHLO {self.envelope.helo}\r\n".encode())]

    def _mail_command(self, chosen: Plan) -> bytes:
        cmd = b"MAIL FROM:<" + chosen.sender + b">"
        if self.extensions.size:
            cmd += b" SIZE=%d" % self.envelope.size
        eight_bit = self.envelope.eight_bit or chosen.smtputf8
        if self.extensions.eight_bit_mime and eight_bit:
            cmd += b" BODY=8BITMIME"
        if chosen.smtputf8:
            cmd += b" SMTPUTF8"
        return cmd + b"\r\n"

    def _after_hello(self) -> list[Action]:
        """EHLO (or HELO) done, and STARTTLS if there was one: authenticate, then the
        envelope. Required TLS that did not happen ends it here, before any AUTH."""
        if self.setup.require_tls and not self.tls:
            return self._end(Finished(report.tls_not_negotiated(self.partner)))
        if self.setup.login is not None:
            return self._authenticate(self.setup.login)
        return self._envelope()

    def _authenticate(self, login: Account) -> list[Action]:
        if not self.tls:  # the policy requires TLS with credentials; never in clear
            return self._end(Finished(report.tls_not_negotiated(self.partner)))
        user = login.credentials.user
        offered = self.extensions.auth
        name = sasl.pick_mechanism(offered, login.mechanism)
        if name is None:
            text = report.auth_unusable(self.partner, offered, login.mechanism, login.where)
            return self._end(Finished(text))
        self._mechanism = sasl.MECHANISMS[name](login.credentials)
        self._who = report.auth_identity(user, name)
        first = self._mechanism.initial()
        self.state = State.AUTH
        command = b"AUTH " + name.encode()
        if first is not None:
            command += b" " + (base64.b64encode(first) if first else b"=")
        return [Send(command + b"\r\n")]

    def _on_auth(self, reply: Reply) -> list[Action]:
        assert self._mechanism is not None
        if reply.code == 334:
            challenge_text = reply.lines[0][4:].strip() if reply.lines else b""
            try:
                challenge = base64.b64decode(challenge_text, validate=True)
                response = self._mechanism.respond(challenge)
            except binascii.Error:
                return self._cancel_auth("its challenge was not base64")
            except sasl.SaslError as e:
                return self._cancel_auth(str(e))
            return [Send(base64.b64encode(response) + b"\r\n")]
        if reply.code == 235 and self._mechanism.finished():
            self.authenticated = self._who
            return self._envelope()
        why = "it said 235 without proving it knows the password" if reply.code == 235 else ""
        return self._end(Finished(report.auth_failed(self.partner, self._who, why, reply.text)))

    def _cancel_auth(self, why: str) -> list[Action]:
        """RFC 4954 section 4: ``*`` ends an exchange we cannot go on with."""
        self.state = State.AUTH_CANCEL
        self._auth_failure = why
        return [Send(b"*\r\n")]

    def _on_auth_cancel(self, reply: Reply) -> list[Action]:
        text = report.auth_failed(self.partner, self._who, self._auth_failure, reply.text)
        return self._end(Finished(text))

    def _envelope(self) -> list[Action]:
        """MAIL, then RCPTs: all at once with DATA when the server pipelines (RFC 2920)."""
        if self.setup.require_tls and not self.tls:
            return self._end(Finished(report.tls_not_negotiated(self.partner)))
        if self.setup.probe:
            return self._end(Finished(report.probe_done(self.partner)))
        env = self.envelope
        offered = self.extensions.smtputf8
        chosen = plan_envelope(
            env.sender, env.recipients, env.utf8_headers, offered, env.strict_headers
        )
        if chosen.refusal is not None:
            # Nothing raw to a server that did not ask for it; the next MX may take it.
            return self._end(NextHost(report.utf8_refused(self.partner, chosen.refusal), True))
        self._plan = chosen
        self.raw_headers = chosen.raw_headers
        self._sendable = [i for i, r in enumerate(chosen.recipients) if r is not None]
        refused: list[Action] = [
            RecipientReport(
                i,
                report.bad_recipient(chosen.faults[i])
                if i in chosen.faults
                else report.recipient_utf8(self.partner),
            )
            for i, r in enumerate(chosen.recipients)
            if r is None
        ]
        self.state = State.MAIL
        if not self.extensions.pipelining:
            return [*refused, Send(self._mail_command(chosen))]
        data = self._mail_command(chosen)
        for index in self._sendable:
            data += self._rcpt_command(index).data
        data += b"DATA\r\n"
        return [*refused, Send(data)]

    def _rcpt_command(self, position: int) -> Send:
        """RCPT for the recipient at ``position`` in the envelope, in this server's form."""
        assert self._plan is not None
        form = self._plan.recipients[position]
        assert form is not None
        return Send(b"RCPT TO:<" + form + b">\r\n")

    # -- states --------------------------------------------------------------------------

    def _on_greeting(self, reply: Reply) -> list[Action]:
        if reply.code != 220:
            return self._next_host(reply)
        return self._ehlo()

    def _on_ehlo(self, reply: Reply) -> list[Action]:
        if reply.code != 250:
            if self.tls:
                # EHLO worked before TLS; refusing it now is a broken server, not an old one.
                return self._quit("Z", "Connected to ", " but EHLO after STARTTLS failed", reply)
            self.state = State.HELO
            return [Send(f"HELO {self.envelope.helo}\r\n".encode())]
        self.extensions = Extensions.parse(reply)
        if self.setup.want_tls and not self.tls and self.extensions.starttls:
            self.state = State.STARTTLS
            return [Send(b"STARTTLS\r\n")]
        return self._after_hello()

    def _on_helo(self, reply: Reply) -> list[Action]:
        if reply.code != 250:
            return self._next_host(reply)
        self.extensions = Extensions()
        return self._after_hello()

    def _on_starttls(self, reply: Reply) -> list[Action]:
        if reply.code != 220:
            if self.setup.require_tls:
                return self._quit("Z", "Connected to ", " but STARTTLS was refused", reply)
            return self._after_hello()
        return [StartTLS()]

    def _on_mail(self, reply: Reply) -> list[Action]:
        if reply.code == 530 and self.setup.route is not None and self.setup.login is None:
            # A relay that wants AUTH we were not given: the administrator's to fix.
            text = report.auth_required(self.partner, self.setup.route, reply.text)
            return self._end(Finished(text))
        if not reply.positive:
            return self._refused(reply)
        self.state = State.RCPT
        self._rcpt_index = 0
        if self.extensions.pipelining:
            return []
        return [self._rcpt_command(self._sendable[0])]

    def _on_rcpt(self, reply: Reply) -> list[Action]:
        index = self._sendable[self._rcpt_index]
        if reply.positive:
            letter = "r"
            self.accepted += 1
        elif reply.permanent:
            letter = "h"
        else:
            letter = "s"
        actions: list[Action] = [
            RecipientReport(index, report.recipient_report(letter, self.partner, reply.text))
        ]
        self._rcpt_index += 1
        if self._rcpt_index < len(self._sendable):
            if not self.extensions.pipelining:
                actions.append(self._rcpt_command(self._sendable[self._rcpt_index]))
            return actions
        if not self.accepted:
            # Pipelined DATA may still be answered 354 by a broken server; QUIT then
            # lands inside an unfinished message, which the server must discard.
            return [*actions, *self._end(Finished(report.no_recipient_accepted(self.partner)))]
        self.state = State.DATA
        if not self.extensions.pipelining:
            actions.append(Send(b"DATA\r\n"))
        return actions

    def _on_data(self, reply: Reply) -> list[Action]:
        if not 300 <= reply.code < 400:
            return self._refused(reply)
        self.state = State.BODY
        self.eight_bit_unasked = self.envelope.eight_bit and not self.extensions.eight_bit_mime
        return [SendBody()]

    def dot_sending(self) -> None:
        """The driver is about to write the final dot: from now on a lost connection
        may have delivered the message (qmail's flagcritical)."""
        self.critical = True

    def broken(self, what: str) -> Finished | NextHost | Stale:
        """The server broke the protocol (``what`` says how): the conversation ends here,
        temporarily, and the driver drops the connection without another word (inside
        DATA even QUIT would become part of the message). Before the envelope started,
        the next MX may do better, as after a failed greeting; on a kept connection
        waiting for RSET's reply, a new connection may."""
        if self.state is State.RSET:
            self.state = State.DONE
            return Stale()
        before_envelope = self.state in (State.GREETING, State.EHLO, State.HELO, State.STARTTLS)
        # (AUTH is not among them: a relay that breaks the protocol there is our one way
        # out, and its other addresses are the same service with the same account.)
        self.state = State.DONE
        text = report.protocol_violation(self.partner, what, self.critical)
        if before_envelope:
            return NextHost(text, False)
        return Finished(text)

    def _on_rset(self, reply: Reply) -> list[Action]:
        if reply.code != 250:
            return self._end(Stale())
        return self._envelope()

    def _on_body(self, reply: Reply) -> list[Action]:
        self.critical = False
        if reply.positive:
            letter, verb = "K", " accepted message"
        else:
            letter = "D" if reply.permanent else "Z"
            verb = " failed after I sent the message"
        if self.setup.keep_open and reply.code != 421 and (reply.positive or reply.code >= 400):
            # Any proper answer but 421 (the server is closing) leaves a usable session.
            self.state = State.DONE
            text = report.quit_report(letter, "", self.partner, verb, reply.text)
            return [Finished(text, open=True)]
        return self._quit(letter, "", verb, reply)


_HANDLERS: dict[State, Callable[[Conversation, Reply], list[Action]]] = {
    State.GREETING: Conversation._on_greeting,
    State.EHLO: Conversation._on_ehlo,
    State.HELO: Conversation._on_helo,
    State.STARTTLS: Conversation._on_starttls,
    State.AUTH: Conversation._on_auth,
    State.AUTH_CANCEL: Conversation._on_auth_cancel,
    State.MAIL: Conversation._on_mail,
    State.RCPT: Conversation._on_rcpt,
    State.DATA: Conversation._on_data,
    State.BODY: Conversation._on_body,
    State.RSET: Conversation._on_rset,
}
"""What a reply in each state is handed to (made once: every reply of every delivery
looks here)."""
