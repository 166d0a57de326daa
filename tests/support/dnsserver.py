"""A real DNS server on loopback (UDP and TCP), built on dnspython's message code.

Tests give it records as zone-file text; names not present answer NXDOMAIN, a name that
exists but lacks the asked type answers NOERROR with no data, names in ``servfail``
answer SERVFAIL, names in ``drop`` are never answered (the client times out), and names
in ``garbage`` get bytes that are not a DNS message.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class Zone:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.servfail: set[str] = set()
        self.drop: set[str] = set()
        self.garbage: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.held: dict[str, threading.Event] = {}
        """Names whose answers wait until their event is set (a slow DNS server)."""
        self.asked = threading.Condition(self.lock)
        self.negative_ttl: int | None = None
        """Seconds a resolver may keep a no-data or NXDOMAIN answer (a SOA in the
        authority section, RFC 2308); None: none is sent, so no resolver keeps one."""

    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".")

    def add(self, name: str, rdtype: str, *values: str) -> None:
        with self.lock:
            self.records.setdefault((self._key(name), rdtype.upper()), []).extend(values)

    def wait_for_query(self, name: str, timeout: float = 30) -> bool:
        """Block until ``name`` has been asked for (held or not)."""
        key = self._key(name)
        with self.lock:
            return self.asked.wait_for(lambda: any(q[0] == key for q in self.queries), timeout)

    def mx(self, domain: str, *exchangers: tuple[int, str]) -> None:
        self.add(domain, "MX", *(f"{p} {n.rstrip('.')}." for p, n in exchangers))

    def a(self, name: str, *ips: str) -> None:
        for ip in ips:
            self.add(name, "AAAA" if ":" in ip else "A", ip)

    def answer(self, wire: bytes, udp: bool = False) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - a test server ignores junk
            return None
        question = query.question[0]
        name = self._key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self.lock:
            self.queries.append((name, rdtype))
            self.asked.notify_all()
            held = self.held.get(name)
        if held is not None:
            held.wait(60)
        with self.lock:
            if name in self.drop:
                return None
            if name in self.garbage:
                return wire[:2] + b"\x81\x80garbage"
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            if name in self.servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
                return response.to_wire()
            exists = any(k[0] == name for k in self.records)
            values = self.records.get((name, rdtype))
            if not exists:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif values:
                rrset = dns.rrset.from_text_list(question.name, 300, "IN", rdtype, values)
                response.answer.append(rrset)
            if not values and self.negative_ttl is not None:
                soa = f"ns.test. admin.test. 1 3600 600 86400 {self.negative_ttl}"
                ttl = self.negative_ttl
                response.authority.append(dns.rrset.from_text("test.", ttl, "IN", "SOA", soa))
        full = response.to_wire(max_size=65535)
        limit = max(query.payload, 512) if query.edns >= 0 else 512
        if udp and len(full) > limit:
            # Classic DNS: a truncated answer sends the client to TCP.
            response.answer = []
            response.flags |= dns.flags.TC
            return response.to_wire()
        return full


class _Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.zone.answer(data, udp=True)  # type: ignore[attr-defined]
        if reply is None:
            return
        sock.sendto(reply, self.client_address)


class _Tcp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5)
        try:
            head = sock.recv(2)
            if len(head) < 2:
                return
            (length,) = struct.unpack("!H", head)
            data = b""
            while len(data) < length:
                chunk = sock.recv(length - len(data))
                if not chunk:
                    return
                data += chunk
            reply = self.server.zone.answer(data)  # type: ignore[attr-defined]
            if reply is not None:
                sock.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DnsServer:
    """Start with ``with DnsServer() as dns:``; ``dns.zone`` holds the data."""

    def __init__(self, ip: str = "127.0.0.1", port: int = 0) -> None:
        self.zone = Zone()
        self.ip = ip
        self.udp = _UdpServer((ip, port), _Udp)
        self.port = self.udp.server_address[1]
        self.tcp = _TcpServer((ip, self.port), _Tcp)
        self.udp.zone = self.tcp.zone = self.zone  # type: ignore[attr-defined]
        self.threads = [
            threading.Thread(target=s.serve_forever, daemon=True) for s in (self.udp, self.tcp)
        ]

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def __enter__(self) -> DnsServer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self.udp, self.tcp):
            s.shutdown()
            s.server_close()
