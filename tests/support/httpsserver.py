"""A real HTTPS server on a loopback address for tests: MTA-STS policies and TLS-report
uploads. Python's http.server in a thread, TLS with a certificate the test made.

``pages`` maps (host, path) to (status, content type, body, extra headers); every request
is kept in ``requests`` (method, host, path, headers, body), so a test can show what was
fetched and what was POSTed.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from dataclasses import dataclass, field

from tests.support.smtpserver import fresh_ip


@dataclass
class Request:
    method: str
    host: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Page:
    status: int = 200
    media: str = "text/plain"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(
                Request(self.command, host, self.path, dict(self.headers.items()), body)
            )
            page = owner.pages.get((host, self.path), Page(404, "text/plain", b"not here"))
        self.send_response(page.status)
        self.send_header("Content-Type", page.media)
        self.send_header("Content-Length", str(len(page.body)))
        for name, value in page.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(page.body)

    do_GET = _serve
    do_POST = _serve


class _Server(http.server.ThreadingHTTPServer):
    owner: HttpsServer
    daemon_threads = True


class HttpsServer:
    def __init__(self, context: ssl.SSLContext, ip: str | None = None, port: int = 443) -> None:
        self.ip = ip or fresh_ip()
        self.port = port
        self.pages: dict[tuple[str, str], Page] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.httpd = _Server((self.ip, port), _Handler)
        self.httpd.owner = self
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def page(self, host: str, path: str, page: Page) -> None:
        with self.lock:
            self.pages[(host.lower(), path)] = page

    def __enter__(self) -> HttpsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
