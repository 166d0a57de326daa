"""What an MTA-STS policy does to a delivery's MX hosts (RFC 8461 section 4.1).

In ``enforce`` mode only MX hosts an ``mx`` pattern covers are used; none left is a ``Z``
with no connection made. In ``testing`` mode they are all used. Either way each host the
policy does not cover, and a policy that could not be had, is a failed session in the
day's TLS report.
"""

from __future__ import annotations

from qremote import report
from qremote.mtasts.discover import Found
from qremote.routing.mx import Target
from qremote.tlsrpt.record import Held, record


def enforce_mx(
    home: str, domain: str, found: Found | None, chosen: list[Target], sending_ip: str
) -> tuple[list[Target], bytes | None]:
    """The MX hosts to try, and the report when there are none."""
    if found is None:
        return chosen, None
    if found.problem is not None and found.policy is None:
        record(home, Held("sts", domain), found.problem.split(":", 1)[0], sending_ip)
    policy = found.policy
    if policy is None:
        return chosen, None
    allowed = [t for t in chosen if policy.allows(t.name)]
    if len(allowed) == len(chosen):
        return chosen, None
    held = Held("sts", domain, tuple(policy.lines()), policy.mx)
    for t in chosen:
        if t not in allowed:
            record(home, held, "validation-failure", sending_ip, t.name, t.ip)
    if policy.mode != "enforce":
        return chosen, None
    if not allowed:
        names = sorted({t.name for t in chosen})
        return chosen, report.sts_no_mx(domain, found.policy_id, names)
    return allowed, None
