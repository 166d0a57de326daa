"""The asyncio side of one SMTP connection: sockets, time-outs, TLS; no protocol logic.

It moves bytes between the socket and a :class:`Conversation` and enforces qmail's
``timeoutremote``: every read and every write must make progress within it, and one
reply must be complete within it too, so a server that dribbles an endless multi-line
reply is cut off like one that stalls (and one that floods is cut off by the reply
parser's bounds).

It also enforces the order of the exchange: a reply must answer a command already sent.
Whatever the server has sent by the time we are about to send the next command, the
message body or its final dot, was sent before it was asked for, and a reply sent
before the dot can never mean the message was accepted. The conversation then ends
with a temporary failure (:meth:`Conversation.broken`) and nothing more is sent.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from qremote import report
from qremote.dane.tlsa import Dane, Mismatch, verify
from qremote.limits import CLOSE_WAIT, READ_CHUNK
from qremote.smtp.body import Body
from qremote.smtp.conversation import (
    Action,
    Conversation,
    Envelope,
    Finished,
    NextHost,
    RecipientReport,
    Send,
    SendBody,
    Stale,
    StartTLS,
    State,
)
from qremote.smtp.replies import Reply, ReplyParser, ReplyTooLong


class ConnectFailed(Exception):
    def __init__(self, timed_out: bool, reason: str) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


class Dropped(Exception):
    """The peer closed, stalled past timeoutremote, or the socket failed."""


class _Unasked(Exception):
    """The server had replied to something we had not yet sent."""


class TlsFailed(Exception):
    """The TLS handshake (or certificate check) failed after the server said 220."""


@dataclass
class TlsSetup:
    """How to run STARTTLS with this host, decided by the TLS policy."""

    context: ssl.SSLContext
    server_name: str
    required: bool
    implicit: bool = False
    """TLS from the first byte (RFC 8314), before the greeting."""
    dane: Dane | None = None
    """Authenticate the server by these TLSA records after the handshake (the context
    itself checks nothing)."""


@dataclass
class SessionResult:
    recipients: list[RecipientReport]
    final: Finished | NextHost | Stale
    tls_info: str = ""
    auth_info: str = ""
    """``Authenticated as ...`` once the relay accepted our credentials."""


async def connect(
    ip: str, port: int, timeout: float, source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP connection, distinguishing time-outs (which tcpto counts)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        if source:
            sock.bind((source, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), timeout)
    except TimeoutError:
        sock.close()
        raise ConnectFailed(True, "timed out") from None
    except OSError as e:
        sock.close()
        raise ConnectFailed(False, e.strerror or str(e)) from None
    return await asyncio.open_connection(sock=sock, limit=READ_CHUNK)


_STEPS = {
    State.GREETING: "waiting for the greeting",
    State.EHLO: "EHLO sent, waiting for its reply",
    State.HELO: "HELO sent, waiting for its reply",
    State.STARTTLS: "STARTTLS sent, waiting for its reply",
    State.AUTH: "AUTH sent, waiting for the relay's answer",
    State.AUTH_CANCEL: "AUTH cancelled, waiting for the relay's answer",
    State.DONE: "QUIT sent",
}
"""What a waiting session is waiting for, in words (check --route says them as it goes)."""


class Abandoned(Exception):
    """Whoever asked for the delivery withdrew before the final dot (qremoted's client
    stopped waiting): the connection is dropped without the dot, so the server discards
    the message, and the delivery ends here: no other address is tried."""


BeforeDot = Callable[[], Awaitable[None]]
"""Called after the body, just before the final dot; raises :class:`Abandoned` to stop."""


class Session:
    """Runs one :class:`Conversation` over one connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conversation: Conversation,
        body: Body,
        timeout: float,
        tls: TlsSetup | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conv = conversation
        self.body = body
        self.timeout = timeout
        self.tls = tls
        self.parser = ReplyParser()
        self.tls_info = ""
        self.tls_version = ""
        self.recipients: list[RecipientReport] = []
        """Recipient reports so far; qmail prints them even if the connection dies later."""
        self.before_dot: BeforeDot | None = None
        """The last word before the dot (qremoted's commit with its client), per message."""
        self.progress: Callable[[str], None] | None = None
        """Told each step as it is reached (``qremote check --route`` prints them)."""

    async def _write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):  # no task per write, as wait_for makes
                await self.writer.drain()
        except (TimeoutError, OSError, ConnectionError) as e:
            raise Dropped(str(e)) from None

    async def _send_body(self) -> None:
        for piece in self.body.pieces():
            await self._write(piece)
        self._nothing_unasked([], "it replied before the message was sent")
        if self.before_dot is not None:
            await self.before_dot()  # Abandoned: the caller drops the connection, no dot
        self.conv.dot_sending()
        await self._write(b".\r\n")

    def _nothing_unasked(self, pending: list[Reply], what: str) -> None:
        """Raise :class:`_Unasked` if the server has said anything we did not ask for
        yet: about to send a command (or the body, or the dot), every reply received so
        far must have been taken by the conversation."""
        if pending or self.parser.partial or self._buffered():
            raise _Unasked(what)

    async def _read_replies(self) -> list[Reply]:
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Dropped("timed out")
            try:
                async with asyncio.timeout(remaining):
                    data = await self.reader.read(READ_CHUNK)
            except (TimeoutError, OSError, ConnectionError) as e:
                raise Dropped(str(e)) from None
            if not data:
                raise Dropped("connection closed")
            replies = self.parser.feed(data)
            if replies:
                return replies

    async def _start_tls(self) -> None:
        assert self.tls is not None
        if self.parser.partial or self._buffered():
            # Anything sent after the 220 and before the handshake could have been
            # injected by a man in the middle (RFC 3207 section 6): do not trust it.
            raise TlsFailed("server sent data after its STARTTLS reply")
        try:
            await asyncio.wait_for(
                self.writer.start_tls(self.tls.context, server_hostname=self.tls.server_name),
                self.timeout,
            )
        except TimeoutError:
            raise TlsFailed("TLS handshake timed out") from None
        except ssl.SSLCertVerificationError as e:
            raise TlsFailed(f"certificate not accepted: {e.verify_message}") from None
        except (ssl.SSLError, OSError, ConnectionError) as e:
            raise TlsFailed(f"TLS handshake failed: {e}") from None
        obj = self.writer.get_extra_info("ssl_object")
        if obj is not None:
            cipher = obj.cipher()
            checked = self.tls.context.verify_mode == ssl.CERT_REQUIRED
            verified = "verified" if checked else "not verified"
            if self.tls.dane is not None and self.tls.dane.records:
                verified = self._dane(obj)
            resumed = ", resumed" if obj.session_reused else ""
            self.tls_version = obj.version() or "TLS"
            self.tls_info = (
                f"TLS {obj.version()} {cipher[0] if cipher else '?'}, {verified}{resumed}"
            )

    def _dane(self, obj: ssl.SSLObject) -> str:
        """Match the server's certificates to the TLSA records (TlsFailed if none does).
        A resumed session was made through a context kept for these very records, and
        sessions are only kept after a match, so it was authenticated by them."""
        assert self.tls is not None and self.tls.dane is not None
        if obj.session_reused:
            return "verified by DANE"
        try:
            usage = verify(_peer_chain(obj), self.tls.dane)
        except Mismatch as e:
            raise TlsFailed(f"DANE: {e}") from None
        return f"verified by DANE (usage {usage})"

    def _result(
        self, recipients: list[RecipientReport], final: Finished | NextHost | Stale
    ) -> SessionResult:
        return SessionResult(recipients, final, self.tls_info, self._auth_info())

    def _auth_info(self) -> str:
        if self.conv.authenticated is None:
            return ""
        return report.note_authenticated(self.conv.authenticated, self.tls_version)

    def _buffered(self) -> bool:
        """Bytes the StreamReader already holds beyond what we parsed. asyncio offers no
        public way to ask, so this looks at its buffer; we always read everything it has
        into our parser, so in practice this is only a second line of defence."""
        return bool(getattr(self.reader, "_buffer", b""))

    async def run(self, start: list[Action] | None = None) -> SessionResult:
        """Hold the conversation to its end: from the greeting, or from ``start`` (the
        RSET of a kept connection, see :meth:`next_message`)."""
        if start and (self.parser.partial or self._buffered()):
            # The server spoke while the connection was idle (a 421 before it closes,
            # or worse): not a connection to carry a message.
            return SessionResult(self.recipients, Stale())
        if start is None and self.tls is not None and self.tls.implicit and not self.conv.tls:
            # RFC 8314: the handshake before the greeting; TlsFailed as for STARTTLS.
            await self._start_tls()
            self.conv.tls = True
        try:
            return await self._run(start or [])
        except (_Unasked, ReplyTooLong) as e:
            self.abort()
            what = str(e)
            if isinstance(e, ReplyTooLong):
                what = f"it sent {what}"
            return self._result(self.recipients, self.conv.broken(what))

    async def _run(self, actions: list[Action]) -> SessionResult:
        recipients = self.recipients
        pending: list[Reply] = []
        while True:
            final = next((a for a in actions if isinstance(a, (Finished, NextHost, Stale))), None)
            restart: list[Action] | None = None
            for action in actions:
                if isinstance(action, Send):
                    if final is None:
                        self._nothing_unasked(pending, "it replied before it was asked")
                        await self._write(action.data)
                    else:
                        await self._write_quietly(action.data)
                elif isinstance(action, SendBody):
                    self._nothing_unasked(pending, "it replied before the message was sent")
                    await self._send_body()
                elif isinstance(action, RecipientReport):
                    recipients.append(action)
                elif isinstance(action, StartTLS):
                    if pending:
                        raise TlsFailed("server sent data after its STARTTLS reply")
                    await self._start_tls()
                    if self.progress is not None:
                        self.progress(f"TLS established ({self.tls_version or 'TLS'})")
                    restart = self.conv.tls_started()
            if final is not None:
                return self._result(recipients, final)
            if restart is not None:
                actions = restart
                continue
            if self.progress is not None:
                self.progress(_STEPS.get(self.conv.state, self.conv.state.name))
            if not pending:
                pending = await self._read_replies()
            actions = self.conv.receive(pending.pop(0))

    def next_message(self, envelope: Envelope, body: Body) -> list[Action]:
        """Prepare a kept connection for another message; pass the result to :meth:`run`."""
        self.body = body
        self.recipients = []
        return self.conv.reset(envelope)

    @property
    def closed(self) -> bool:
        """True when the server has closed its side (an idle connection it timed out)."""
        return self.reader.at_eof() or self.writer.is_closing()

    async def quit(self) -> None:
        """End a kept connection politely."""
        await self._write_quietly(b"QUIT\r\n")
        await self.close()

    async def _write_quietly(self, data: bytes) -> None:
        """QUIT after the outcome is known: a failure here changes nothing."""
        try:
            await self._write(data)
        except Dropped:
            pass

    def _remember_tls(self) -> None:
        """Hand the TLS session to the context for the next connection to this server
        (a ticket arrives after the handshake, so this is done at the end)."""
        if self.tls is None or not self.tls_info:
            return
        remember = getattr(self.tls.context, "remember", None)
        obj = self.writer.get_extra_info("ssl_object")
        if remember is not None and obj is not None:
            remember(self.tls.server_name, obj)

    def abort(self) -> None:
        """Drop the connection at once, without waiting (cancellation paths)."""
        transport = self.writer.transport
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        self._remember_tls()
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_WAIT)
        except Exception:  # noqa: BLE001 - closing must never change a result
            self.abort()


def _peer_chain(obj: ssl.SSLObject) -> list[bytes]:
    """The certificates the server sent, leaf first, as DER. Python 3.13 has this as
    ``get_unverified_chain``; before it, the same method exists on the underlying object."""
    method = getattr(obj, "get_unverified_chain", None)
    if method is None:
        method = getattr(getattr(obj, "_sslobj", None), "get_unverified_chain", None)
    if method is None:
        return []
    chain = method() or []
    der = [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    return der


def dropped_report(conv: Conversation) -> bytes:
    return report.dropped(conv.partner, conv.critical)
