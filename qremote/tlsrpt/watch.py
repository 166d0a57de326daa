"""What one connection's TLS was held to, and where its outcome goes: a line for the
TLS report (DANE and MTA-STS hosts) and, in qremoted, the DANE counts of ``qremote status``."""

from __future__ import annotations

from dataclasses import dataclass

from qremote.metrics.trace import Trace
from qremote.tls.policy import Policy
from qremote.tls.tally import Tally
from qremote.tlsrpt.record import Held, record


def held_by(
    policy: Policy, domain: str, sts_lines: tuple[str, ...], sts_mx: tuple[str, ...]
) -> Held | None:
    """The RFC 8460 policy a host's TLS policy comes from, if any (pure)."""
    if policy.dane is not None:
        lines = tuple(
            f"{r.usage} {r.selector} {r.mtype} {r.data.hex()}" for r in policy.dane.records
        )
        return Held("tlsa", domain, lines)
    if policy.sts is not None:
        return Held("sts", domain, sts_lines, sts_mx)
    return None


@dataclass
class Watch:
    home: str
    held: Held | None
    group: str
    tally: Tally | None
    sending_ip: str
    mx_host: str
    mx_ip: str
    trace: Trace | None = None
    """Where each failure's result type is counted (qremoted's counts), when the host's
    TLS was to be authenticated (DANE, MTA-STS, tlshosts) whether or not a TLS report is."""

    def _count(self, ok: bool) -> None:
        if self.tally is not None and self.held is not None and self.held.kind == "tlsa":
            if self.held.strings or not ok:  # authentication was asked for, or failed
                self.tally.add(self.group, "DANE", ok)

    def success(self) -> None:
        if self.held is not None:
            record(self.home, self.held, None, self.sending_ip, self.mx_host, self.mx_ip)
            self._count(True)

    def failure(self, result: str) -> None:
        if self.trace is not None:
            self.trace.tls_failures.append(result)
        if self.held is not None:
            record(self.home, self.held, result, self.sending_ip, self.mx_host, self.mx_ip)
            self._count(False)
