"""Building an RFC 8460 aggregate report from a day's session lines (pure functions)."""

from __future__ import annotations

import calendar
import gzip
import json
import time
from collections import Counter
from dataclasses import dataclass

from qremote.smtp.body import header_block


@dataclass(frozen=True)
class Report:
    domain: str
    report_id: str
    start: int
    end: int
    """The day's first and last second (UTC), as seconds since the epoch."""
    document: dict[str, object]

    def json(self) -> bytes:
        return json.dumps(self.document, indent=1).encode()

    def gzipped(self) -> bytes:
        return gzip.compress(self.json(), mtime=0)

    def filename(self, submitter: str) -> str:
        """RFC 8460 section 5.3: sender!policy-domain!begin!end.json.gz"""
        return f"{submitter}!{self.domain}!{self.start}!{self.end}.json.gz"


def day_range(day: str) -> tuple[int, int]:
    start = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    return start, start + 86399


def build(day: str, domain: str, lines: list[dict], org: str, contact: str) -> Report:
    """One domain's report for one UTC day: a policy object per distinct policy the
    sessions were held to, with the session counts and failure details (RFC 8460 4.4)."""
    start, end = day_range(day)
    groups: dict[tuple, list[dict]] = {}
    for line in lines:
        key = (line.get("type", "sts"), tuple(line.get("policy", [])), tuple(line.get("mx", [])))
        groups.setdefault(key, []).append(line)
    policies = []
    for (kind, strings, mx), sessions in sorted(groups.items()):
        failures = [s for s in sessions if s.get("result")]
        details: Counter[tuple[str, str, str, str]] = Counter(
            (s["result"], s.get("sending-ip", ""), s.get("mx-host", ""), s.get("mx-ip", ""))
            for s in failures
        )
        policy: dict[str, object] = {
            "policy-type": kind,
            "policy-string": list(strings),
            "policy-domain": domain,
        }
        if kind == "sts":
            policy["mx-host"] = list(mx)
        entry: dict[str, object] = {
            "policy": policy,
            "summary": {
                "total-successful-session-count": len(sessions) - len(failures),
                "total-failure-session-count": len(failures),
            },
        }
        if details:
            entry["failure-details"] = [
                _detail(result, sender, host, ip, count)
                for (result, sender, host, ip), count in sorted(details.items())
            ]
        policies.append(entry)
    report_id = f"{day}.{domain}@{org}"
    document: dict[str, object] = {
        "organization-name": org,
        "date-range": {
            "start-datetime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
            "end-datetime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)),
        },
        "contact-info": contact,
        "report-id": report_id,
        "policies": policies,
    }
    return Report(domain, report_id, start, end, document)


def _detail(result: str, sender: str, host: str, ip: str, count: int) -> dict[str, object]:
    detail: dict[str, object] = {"result-type": result}
    if sender:
        detail["sending-mta-ip"] = sender
    if host:
        detail["receiving-mx-hostname"] = host
    if ip:
        detail["receiving-ip"] = ip
    detail["failed-session-count"] = count
    return detail


class HeaderError(ValueError):
    """A value that would break out of its header field (CR, LF, NUL, non-ASCII)."""


def _field_value(text: str) -> str:
    if not text.isascii() or any(c in text for c in "\r\n\0"):
        raise HeaderError(f"{ascii(text[:80])} cannot stand in a header field")
    return text


def message(report: Report, org: str, sender: str, to: str, boundary: str, date: str) -> bytes:
    """The report as RFC 8460 section 5.3 mails it: multipart/report, report-type tlsrpt,
    the gzipped JSON as application/tlsrpt+gzip.

    Every value that goes into a header field is checked here, whoever checked it before
    (the ``rua`` parser, the control files): HeaderError rather than a second field.
    """
    import base64

    for value in (org, sender, to, boundary, date, report.domain, report.report_id):
        _field_value(value)
    data = base64.encodebytes(report.gzipped()).decode("ascii")
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Date: {date}",
        f"Subject: Report Domain: {report.domain} Submitter: {org} Report-ID: <{report.report_id}>",
        f"TLS-Report-Domain: {report.domain}",
        f"TLS-Report-Submitter: {org}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type="tlsrpt"; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This is an aggregate TLS report from {org} for {report.domain}.",
        "",
        f"--{boundary}",
        "Content-Type: application/tlsrpt+gzip",
        "Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment; filename="{report.filename(org)}"',
        "",
        data.rstrip("\n"),
        f"--{boundary}--",
        "",
    ]
    return "\n".join(lines).encode()


def is_tls_report(message: bytes, sender: bytes, contact: str) -> bool:
    """One of our own reports (``qremote tlsrpt send``): RFC 8460 section 5.3.1 asks that
    its delivery not be held to DANE or MTA-STS, whose failures it may be reporting."""
    if sender.decode("utf-8", "replace").lower() != contact.lower():
        return False
    head = header_block(message).lower()
    return head.startswith(b"tls-report-domain:") or b"\ntls-report-domain:" in head
