"""An HTTPS client for one request per connection: MTA-STS policies (RFC 8461 section 3.3,
:mod:`qremote.mtasts.fetch`) and TLS reports posted to ``https:`` addresses (RFC 8460,
:mod:`qremote.tlsrpt.send`).

HTTP/1.1 is spoken with h11 (a well-kept sans-I/O HTTP library, in the style of our own
SMTP core) over asyncio streams, rather than a full client such as httpx: we need one
request per connection, no redirects (RFC 8461 forbids following them), our own
SSLContext (the system's CAs, as OpenSSL finds them: no bundled list) and our own name
resolution (``control/nameservers``, like every other lookup of a delivery); a full
client would bring a second event-loop layer (anyio) and a CA bundle we must turn off.

Every request is bounded: the answer's header to
:data:`~qremote.limits.STS_HEADER_MAX` bytes, its body to the caller's limit, the whole
exchange to the caller's time-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from qremote.limits import CLOSE_WAIT, STS_FETCH_TIMEOUT, STS_HEADER_MAX, STS_POLICY_MAX


class HttpsError(Exception):
    """The request failed; the text says why."""


Resolve = Callable[[str], Awaitable[str]]
"""A host name to the address to connect to."""


def https_context() -> ssl.SSLContext:
    """Certificates verified against the system's CAs (SSL_CERT_FILE and SSL_CERT_DIR
    honoured) and the host name; TLS 1.2 at least."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def request(
    method: str,
    url: str,
    resolve: Resolve,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    limit: int = STS_POLICY_MAX,
    timeout: float = STS_FETCH_TIMEOUT,
) -> tuple[int, str, bytes]:
    """One HTTPS request: (status, media type, at most ``limit`` bytes of the body);
    HttpsError for everything that goes wrong, a body past ``limit`` included."""
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(method, url, resolve, body, headers or [], limit)
    except TimeoutError:
        raise HttpsError(f"no answer within {timeout:g} seconds") from None
    except ssl.SSLCertVerificationError as e:
        raise HttpsError(f"certificate not accepted: {e.verify_message}") from None
    except (ssl.SSLError, OSError) as e:
        raise HttpsError(f"HTTPS failed: {e.__class__.__name__}: {e}") from None


async def _exchange(
    method: str,
    url: str,
    resolve: Resolve,
    body: bytes,
    headers: list[tuple[str, str]],
    limit: int,
) -> tuple[int, str, bytes]:
    import h11

    try:
        parts = urlsplit(url)
        port = parts.port or 443
    except ValueError as e:  # a malformed URL is this request's failure, nobody else's
        raise HttpsError(f"not a valid URL: {e}") from None
    host = parts.hostname or ""
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        address = await resolve(host)
    except Exception as e:  # noqa: BLE001 - any failure to resolve is a failure to fetch
        raise HttpsError(f"cannot resolve {host}: {e}") from None
    reader, writer = await asyncio.open_connection(
        address, port, ssl=https_context(), server_hostname=host
    )
    try:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=STS_HEADER_MAX)
        sent = [("Host", host), ("User-Agent", "qremote"), ("Connection", "close"), *headers]
        if body:
            sent.append(("Content-Length", str(len(body))))
        out = conn.send(h11.Request(method=method, target=target, headers=sent))
        if body:
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        writer.write(out)
        await writer.drain()
        status, media, data = 0, "", bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                # Small reads: h11 checks its bound between them, so a header block
                # can outgrow STS_HEADER_MAX by one read at most before it is refused.
                conn.receive_data(await reader.read(4096))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    if name == b"content-type":
                        media = value.split(b";")[0].strip().lower().decode("latin-1")
            elif isinstance(event, h11.Data):
                data += event.data
                if len(data) > limit:
                    raise HttpsError(f"the answer is larger than {limit} bytes")
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, media, bytes(data)
    except (h11.RemoteProtocolError, h11.LocalProtocolError) as e:
        raise HttpsError(f"HTTP protocol error: {ascii(str(e)[:200])}") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), CLOSE_WAIT)
