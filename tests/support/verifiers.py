"""Independent verifiers: dkimpy and Perl's Mail::DKIM, both fetching keys from DNS.

dkimpy is asked once per signature through ``dkim.DKIM(...).verify(idx=i, dnsfunc=...)``
with a DNS function that queries the loopback server; Mail::DKIM runs as a separate Perl
process pointed at the same server and also checks DomainKey-Signature fields.
"""

from __future__ import annotations

import os
import subprocess

import dkim
import dns.message
import dns.query
import dns.rdatatype

HERE = os.path.dirname(os.path.abspath(__file__))


def _txt_lookup(dns_ip: str, dns_port: int):
    """dkimpy's ``dnsfunc``: TXT records from the loopback server."""

    def dnsfunc(name, timeout=5):
        qname = name.decode() if isinstance(name, bytes) else name
        query = dns.message.make_query(qname, dns.rdatatype.TXT)
        answer = dns.query.tcp(query, dns_ip, port=dns_port, timeout=timeout)
        for rrset in answer.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return None

    return dnsfunc


def dkimpy(message: bytes, dns_ip: str, dns_port: int) -> list[bool]:
    dnsfunc = _txt_lookup(dns_ip, dns_port)
    wire = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    count = sum(
        1
        for line in wire.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if line.lower().startswith(b"dkim-signature:")
    )
    d = dkim.DKIM(wire)

    def one(i: int) -> bool:
        try:
            return bool(d.verify(idx=i, dnsfunc=dnsfunc))
        except dkim.DKIMException:  # e.g. "body hash mismatch" is raised, not returned
            return False

    return [one(i) for i in range(count)]


def mail_dkim(message: bytes, dns_ip: str, dns_port: int) -> list[tuple[str, str, str, str]]:
    """(type, domain, selector, result_detail) per signature, from Mail::DKIM."""
    proc = subprocess.run(
        ["perl", os.path.join(HERE, "verify_dkim.pl"), dns_ip, str(dns_port)],
        input=message,
        capture_output=True,
        timeout=60,
        check=True,
    )
    out = []
    for line in proc.stdout.decode().splitlines():
        kind, domain, selector, detail = line.split(" ", 3)
        out.append((kind, domain, selector, detail))
    return out


def dkimpy_arc(message: bytes, dns_ip: str, dns_port: int) -> tuple[str, str]:
    """(the chain's result: pass, fail or none; dkimpy's reason) from ``dkim.arc_verify``."""

    dnsfunc = _txt_lookup(dns_ip, dns_port)
    wire = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    cv, _, reason = dkim.arc_verify(wire, dnsfunc=dnsfunc)
    said = {dkim.CV_Pass: "pass", dkim.CV_None: "none"}.get(cv, "fail")
    return said, reason if isinstance(reason, str) else str(reason)


def mail_dkim_arc(message: bytes, dns_ip: str, dns_port: int) -> tuple[str, str]:
    """(the chain's result, Mail::DKIM's detail) from Mail::DKIM::ARC::Verifier."""
    proc = subprocess.run(
        ["perl", os.path.join(HERE, "verify_arc.pl"), dns_ip, str(dns_port)],
        input=message,
        capture_output=True,
        timeout=60,
        check=True,
    )
    result, _, detail = proc.stdout.decode().strip().partition(" ")
    return result, detail


def mail_dkim_version() -> str:
    """The installed Mail::DKIM's version, as Perl reports it (for what the demo says)."""
    done = subprocess.run(
        ["perl", "-MMail::DKIM", "-e", "print $Mail::DKIM::VERSION"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "(version unknown)"
