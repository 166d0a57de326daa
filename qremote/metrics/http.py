"""The ``/metrics`` server: HTTP/1.1 through h11 on the daemon's own event loop.

Whoever reaches the address can read the numbers (no authentication, as with any
Prometheus exporter), so the address is loopback unless the administrator says
otherwise, and ``qremote check`` names one that is not. Every request is hostile input:
its head is read within :data:`~qremote.limits.METRICS_REQUEST_BYTES` and
:data:`~qremote.limits.METRICS_REQUEST_SECONDS`, one request per connection, at most
:data:`~qremote.limits.METRICS_CLIENTS` at once (a connection past them is closed at
once: a flood costs the scrapes of its duration, never the daemon's descriptors).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

import h11

from qremote.limits import METRICS_CLIENTS, METRICS_REQUEST_BYTES, METRICS_REQUEST_SECONDS

DEFAULT_PORT = 9716
"""qremoted's; verifyd's default is the next one."""

CONTROL_FILES = {"metrics": DEFAULT_PORT, "verifydmetrics": DEFAULT_PORT + 1}
"""Where each daemon's address is written in ``control/`` (qremoted's, verifyd's), with
the port an address without one gets."""


class AddressError(ValueError):
    """An address that cannot be listened on as written."""


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``HOST`` or ``:PORT`` (loopback) as (ip, port)."""
    text = text.strip()
    host, port = text, str(default_port)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise AddressError(f"{text!r}: expected [address]:port")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    host = host or "127.0.0.1"
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        raise AddressError(f"{text!r}: {host!r} is not an IP address") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise AddressError(f"{text!r}: {port!r} is not a port number")
    return ip, int(port)


def is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_loopback


PUBLIC = "public"
"""Written after an address that is not loopback, it says the administrator means it
(``qremote check`` then notes the address instead of naming it as a problem)."""


@dataclass(frozen=True)
class Endpoint:
    """Where a daemon serves ``/metrics`` (``--metrics`` or its control file)."""

    ip: str
    port: int
    public: bool = False
    """Said to be reachable from elsewhere on purpose (the word ``public``)."""

    @classmethod
    def parse(cls, text: str, default_port: int = DEFAULT_PORT) -> Endpoint:
        """``ADDRESS[:PORT] [public]`` (see :func:`parse_address`), or ``on`` for the
        loopback default ``127.0.0.1:<default_port>``."""
        if text.strip() == "on":
            return cls("127.0.0.1", default_port)
        words = text.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] != PUBLIC):
            raise AddressError(f"{text.strip()[:80]!r}: expected address:port [public]")
        ip, port = parse_address(words[0], default_port)
        return cls(ip, port, len(words) == 2)

    @classmethod
    def setting(cls, text: str | None, default_port: int = DEFAULT_PORT) -> Endpoint | None:
        """A control file's or an option's text: None (off) when it is missing, empty or
        ``off``; AddressError when it is not an address."""
        if text is None or not text.strip() or text.strip() == "off":
            return None
        return cls.parse(text, default_port)

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}/metrics"

    def exposed(self, where: str) -> str | None:
        """What ``qremote check`` says of an address others can reach (``where``: the
        file or option that set it), or None for loopback."""
        if is_loopback(self.ip):
            return None
        said = (
            f"{where}: {self.url} is not loopback: whoever reaches it reads the numbers (there "
            "is no authentication)"
        )
        if self.public:
            return f"note: {said}; marked public"
        return f"{said}; firewall it and write 'public' after the address, or use 127.0.0.1"


def listen(ip: str, port: int) -> socket.socket:
    """The listening socket (made before a daemon forks its workers, who share it)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


Page = Callable[[], bytes]


async def serve(sock: socket.socket, page: Page, content_type: str) -> None:
    """Answer scrapes on ``sock`` until cancelled; ``page`` makes the body of each."""
    tasks: set[asyncio.Task[None]] = set()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(METRICS_REQUEST_SECONDS):
                await _answer(reader, writer, page, content_type)
        except (TimeoutError, OSError, h11.ProtocolError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    def started(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(tasks) >= METRICS_CLIENTS:
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(one(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(started, sock=sock)
    try:
        await asyncio.Event().wait()
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, page: Page, content_type: str
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=METRICS_REQUEST_BYTES)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(4096)
            conn.receive_data(data)
            continue
        break
    if not isinstance(event, h11.Request):
        return
    target = event.target.split(b"?", 1)[0]
    if event.method not in (b"GET", b"HEAD"):
        status, body, kind = 405, b"only GET\n", "text/plain"
    elif target == b"/metrics":
        status, body, kind = 200, page(), content_type
    elif target == b"/":
        status, body, kind = 200, b"qremote: the numbers are at /metrics\n", "text/plain"
    else:
        status, body, kind = 404, b"not found: the numbers are at /metrics\n", "text/plain"
    headers = [
        ("Content-Type", kind),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    out = conn.send(h11.Response(status_code=status, headers=headers))
    if event.method == b"GET":
        out += conn.send(h11.Data(data=body))
    out += conn.send(h11.EndOfMessage())
    writer.write(out)
    await writer.drain()
