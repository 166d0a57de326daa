"""Real SMTP servers for tests: aiosmtpd on a 127.0.0.x address with scripted replies.

With ``accounts`` it is an AUTH relay: aiosmtpd's own PLAIN and LOGIN, SCRAM-SHA-256 by
scramp (an independent implementation of RFC 5802/7677), CRAM-MD5 as RFC 2195 says; by
default AUTH is offered only inside TLS (aiosmtpd's ``auth_require_tls``). With
``implicit_tls`` it speaks TLS from the first byte (RFC 8314, port 465). Every byte a
client sent (after TLS: decrypted) is kept in ``received_bytes``, so a test can show a
password never arrived.

A :class:`Script` names, per step, what the server answers instead of aiosmtpd's own
reply: a reply string (multi-line with ``\\r\\n``), or one of the hostile behaviours
:data:`CLOSE` (hang up), :data:`STALL` (say nothing, keep the connection) or
:class:`Raw` (write these exact bytes, then stall, close or carry on). Steps left unset
behave like a normal server, so the message really arrives and can be compared.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import itertools
import secrets
import ssl
import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

CLOSE = "\0CLOSE"
STALL = "\0STALL"
TLS_BREAK = "\0TLSBREAK"
"""Answer STARTTLS with 220, then send bytes that are not TLS: the handshake fails."""
FLOOD = "\0FLOOD"
"""A multi-line reply that never ends: ``250-more`` lines, forever (a minute at most)."""


@dataclass(frozen=True)
class Raw:
    data: bytes
    then: str = "stall"  # "stall", "close" or "continue"


@dataclass(frozen=True)
class Slow:
    seconds: float
    reply: str


Reply = str | Raw | Slow


@dataclass
class Script:
    greeting: Reply | None = None
    ehlo: Reply | None = None
    extensions: list[str] | None = None
    """EHLO keywords to advertise instead of aiosmtpd's (STARTTLS is added when TLS is on)."""
    helo: Reply | None = None
    mail: Reply | None = None
    rcpt: Reply | list[Reply | None] | None = None
    data: Reply | None = None
    dot: Reply | None = None
    starttls: Reply | None = None
    rset: Reply | None = None


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    """The message as it arrived: CRLF line ends, dot-stuffing removed."""
    login: bytes | None = None
    """The account the client authenticated as on this connection, if any."""


@dataclass
class Connection:
    peer: tuple
    commands: list[str] = field(default_factory=list)
    tls: bool = False
    client_cert: dict | None = None
    quit: bool = False
    """The client said QUIT (kept out of ``commands``, which ends with the envelope)."""


class _Handler:
    def __init__(self, server: ScriptedServer) -> None:
        self.owner = server

    def _conn(self, session) -> Connection:
        return self.owner._connection(session)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        conn = self._conn(session)
        conn.commands.append(f"EHLO {hostname}")
        conn.tls = session.ssl is not None
        if conn.tls and server.transport is not None:
            conn.client_cert = server.transport.get_extra_info("peercert")
        script = self.owner.script
        if script.ehlo is not None:
            return [_sentinel(self.owner, script.ehlo)]
        session.host_name = hostname
        if script.extensions is None:
            lines = [r[4:] for r in responses[1:]]
            if self.owner.pipelining:
                lines.insert(0, "PIPELINING")
        else:
            lines = list(script.extensions)
            if server.tls_context is not None and session.ssl is None:
                lines.append("STARTTLS")
        out = [f"250-{responses[0][4:]}"] + [f"250-{x}" for x in lines]
        out[-1] = "250 " + out[-1][4:]
        return out

    async def handle_HELO(self, server, session, envelope, hostname):
        self._conn(session).commands.append(f"HELO {hostname}")
        if self.owner.script.helo is not None:
            return _sentinel(self.owner, self.owner.script.helo)
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        shown = address if address.startswith("<") else f"<{address}>"
        self._conn(session).commands.append(" ".join(["MAIL", shown, *mail_options]))
        if self.owner.script.mail is not None:
            reply = _sentinel(self.owner, self.owner.script.mail)
            if not reply.startswith("2"):
                return reply
        else:
            reply = "250 OK"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        conn = self._conn(session)
        index = sum(1 for c in conn.commands if c.startswith("RCPT"))
        conn.commands.append(f"RCPT <{address}>")
        script = self.owner.script.rcpt
        if isinstance(script, list):
            script = script[index] if index < len(script) else None
        reply = "250 OK" if script is None else _sentinel(self.owner, script)
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data
        if isinstance(login, LoginPassword):
            login = login.login
        self.owner.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                bytes(envelope.original_content),
                login if session.authenticated else None,
            )
        )
        if self.owner.script.dot is not None:
            return _sentinel(self.owner, self.owner.script.dot)
        return "250 2.0.0 Ok: queued as 1234"


    # -- AUTH mechanisms beyond aiosmtpd's own PLAIN and LOGIN -------------------------

    async def auth_CRAM__MD5(self, server, args):
        """RFC 2195: a unique challenge, answered with ``user hex(HMAC-MD5)``."""
        challenge = f"<{secrets.randbelow(10**9)}.{secrets.randbelow(10**9)}@mx.test>".encode()
        answer = await server.challenge_auth(challenge)
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        user, _, digest = answer.rpartition(b" ")
        password = self.owner.accounts.get(user)
        ok = password is not None and hmac.compare_digest(
            digest, hmac.new(password, challenge, hashlib.md5).hexdigest().encode()
        )
        return self.owner._authenticated("CRAM-MD5", user, ok)

    async def auth_SCRAM__SHA__256(self, server, args):
        """RFC 5802/7677, the server side by scramp."""
        import scramp

        mechanism = scramp.ScramMechanism("SCRAM-SHA-256")
        accounts = self.owner.accounts
        seen: list[bytes] = []

        def lookup(username: str):
            seen.append(username.encode())
            password = accounts.get(username.encode())
            if password is None:
                raise scramp.ScramException("unknown user")
            return mechanism.make_auth_info(password.decode(), iteration_count=4096)

        server_side = mechanism.make_server(lookup)
        try:
            if len(args) > 1:
                first = base64.b64decode(args[1], validate=True)
            else:
                first = await server.challenge_auth(b"")
                if first is MISSING:
                    return AuthResult(success=False, handled=True)
            server_side.set_client_first(first.decode())
            final = await server.challenge_auth(server_side.get_server_first())
            if final is MISSING:
                return AuthResult(success=False, handled=True)
            server_side.set_client_final(final.decode())
            if self.owner.scram_wrong_signature:
                said = b"v=" + base64.b64encode(b"\0" * 32)
            else:
                said = server_side.get_server_final().encode()
            empty = await server.challenge_auth(said)
            if empty is MISSING:
                return AuthResult(success=False, handled=True)
        except (scramp.ScramException, binascii.Error, UnicodeDecodeError):
            return self.owner._authenticated("SCRAM-SHA-256", (seen or [b"?"])[0], False)
        return self.owner._authenticated("SCRAM-SHA-256", seen[0], True)


def _sentinel(owner: ScriptedServer, reply: Reply) -> str:
    if isinstance(reply, (Raw, Slow)):
        key = next(owner._raw_ids)
        owner._raws[key] = reply
        return f"\0RAW{key}"
    return reply


class _ScriptedSMTP(SMTP):
    def __init__(self, handler: _Handler, owner: ScriptedServer, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.owner = owner
        self._greeted = False
        self._counted = False

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, bytes):  # an AUTH challenge (challenge_auth)
            await super().push(status)
            return
        if not self._greeted:
            self._greeted = True
            self.owner._connection(self.session)
            if self.owner.armed and self.owner.script.greeting is not None:
                status = _sentinel(self.owner, self.owner.script.greeting)
        if status == CLOSE:
            if self.transport is not None:
                self.transport.close()
            return
        if status == STALL:
            await asyncio.sleep(3600)
            return
        if status == TLS_BREAK:
            await super().push("220 Ready to start TLS")
            await asyncio.sleep(0.3)
            if self.transport is not None:
                self.transport.write(b"this is not a TLS record\r\n" * 20)
                self.transport.close()
            return
        if status == FLOOD:
            for _ in range(6000):
                if self.transport is None or self.transport.is_closing():
                    return
                self.transport.write(b"250-more and more\r\n")
                await asyncio.sleep(0.01)
            return
        if status.startswith("\0RAW") and isinstance(self.owner._raws[int(status[4:])], Slow):
            slow = self.owner._raws[int(status[4:])]
            await asyncio.sleep(slow.seconds)
            await super().push(slow.reply)
            return
        if status.startswith("\0RAW"):
            raw = self.owner._raws[int(status[4:])]
            if self.transport is not None:
                self.transport.write(raw.data)
            if raw.then == "close" and self.transport is not None:
                self.transport.close()
            elif raw.then == "stall":
                await asyncio.sleep(3600)
            return
        await super().push(status)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if not self._counted:  # (aiosmtpd calls this again after STARTTLS)
            self._counted = True
            self.owner._enter()

    def data_received(self, data: bytes) -> None:
        with self.owner._lock:
            self.owner.received_bytes += data
        super().data_received(data)

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        self._uncount()

    def _uncount(self) -> None:
        """A connection stops counting as active at QUIT or when it is lost, whichever
        comes first: a client that said QUIT has let go of its slot, and the server may
        notice the closed socket only after the next client connected."""
        if self._counted:
            self._counted = False
            self.owner._leave()

    async def smtp_STARTTLS(self, arg: str) -> None:
        self.owner._connection(self.session).commands.append("STARTTLS")
        if self.owner.script.starttls is not None:
            await self.push(_sentinel(self.owner, self.owner.script.starttls))
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_RSET(self, arg: str) -> None:
        self.owner._connection(self.session).commands.append("RSET")
        if self.owner.script.rset is not None:
            await self.push(_sentinel(self.owner, self.owner.script.rset))
            return
        await super().smtp_RSET(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        self.owner._connection(self.session).quit = True
        self._uncount()
        await super().smtp_QUIT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        script = self.owner.script.data
        if script is not None and self.envelope is not None and self.envelope.rcpt_tos:
            reply = _sentinel(self.owner, script)
            if not reply.startswith("354"):
                await self.push(reply)
                return
        elif script is not None and self.envelope is not None and not self.envelope.rcpt_tos:
            await self.push(_sentinel(self.owner, script))
            return
        await super().smtp_DATA(arg)


class _Controller(Controller):
    def __init__(self, owner: ScriptedServer, **kwargs) -> None:
        self.owner = owner
        super().__init__(_Handler(owner), **kwargs)

    def factory(self):
        return _ScriptedSMTP(self.handler, self.owner, **self.SMTP_kwargs)


def free_port(ip: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for servers off port 25)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


_addresses = itertools.count(2)


def fresh_ip() -> str:
    """A loopback address no other server in this test run has used."""
    n = next(_addresses)
    return f"127.3.{n // 250}.{n % 250 + 2}"


class ScriptedServer:
    """``with ScriptedServer(Script(...)) as srv:`` listens on ``srv.ip:srv.port``."""

    def __init__(
        self,
        script: Script | None = None,
        ip: str | None = None,
        port: int = 25,
        tls_context: ssl.SSLContext | None = None,
        pipelining: bool = True,
        accounts: dict[bytes, bytes] | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        auth_require_tls: bool = True,
        smtputf8: bool = False,
        eight_bit_mime: bool = True,
    ) -> None:
        self.script = script or Script()
        self.ip = ip or fresh_ip()
        self.port = port
        self.pipelining = pipelining
        self.received: list[Received] = []
        self.connections: list[Connection] = []
        self.armed = False
        self._raws: dict[int, Raw | Slow] = {}
        self.active = 0
        self.max_active = 0
        self._raw_ids = itertools.count()
        self._by_session: dict[tuple, Connection] = {}
        self._lock = threading.Lock()
        self.accounts = accounts or {}
        self.auth_attempts: list[tuple[str, bytes, bool]] = []
        """(mechanism, user, accepted) for every AUTH exchange that got that far."""
        self.scram_wrong_signature = False
        """Answer SCRAM with a server signature that proves nothing (an impostor)."""
        self.received_bytes = bytearray()
        kwargs: dict = {"hostname": self.ip, "port": port}
        kwargs["server_hostname"] = "mx.test"
        if tls_context is not None:
            kwargs["tls_context"] = tls_context
        if implicit_tls is not None:
            kwargs["ssl_context"] = implicit_tls
        # aiosmtpd's Controller offers SMTPUTF8 unless told not to.
        kwargs["enable_SMTPUTF8"] = smtputf8
        if not eight_bit_mime:
            # aiosmtpd offers 8BITMIME unless it decodes data as text; then it refuses
            # 8-bit data, as a strict server does.
            kwargs["decode_data"] = True
        if accounts is None:
            kwargs["auth_exclude_mechanism"] = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]
        else:
            kwargs["authenticator"] = self._builtin_authenticator
            kwargs["auth_require_tls"] = auth_require_tls and implicit_tls is None
        self.controller = _Controller(self, **kwargs)

    def _authenticated(self, mechanism: str, user: bytes, ok: bool) -> AuthResult:
        with self._lock:
            self.auth_attempts.append((mechanism, user, ok))
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    def _builtin_authenticator(self, server, session, envelope, mechanism, auth_data):
        """aiosmtpd's PLAIN and LOGIN hand us the user and password they decoded."""
        user, password = auth_data.login, auth_data.password
        ok = self.accounts.get(user) == password
        with self._lock:
            self.auth_attempts.append((mechanism, user, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _enter(self) -> None:
        with self._lock:
            if self.armed:
                self.active += 1
                self.max_active = max(self.max_active, self.active)

    def _leave(self) -> None:
        with self._lock:
            if self.armed and self.active > 0:
                self.active -= 1

    def _connection(self, session) -> Connection:
        with self._lock:
            # Keyed by the client's address: aiosmtpd starts a new session after STARTTLS.
            conn = self._by_session.get(session.peer)
            if conn is None:
                conn = Connection(session.peer)
                self._by_session[session.peer] = conn
                if self.armed:
                    self.connections.append(conn)
            return conn

    def __enter__(self) -> ScriptedServer:
        self.controller.start()
        self.armed = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop(no_assert=True)
