"""DNS outcomes as qmail-remote distinguishes them (kept free of dnspython, so a delivery
that needs no DNS does not pay for importing it)."""

from __future__ import annotations


class DnsHard(Exception):
    """The name does not exist (NXDOMAIN)."""


class DnsSoft(Exception):
    """The lookup failed temporarily (time-out, SERVFAIL, malformed answer)."""


class NullMx(Exception):
    """The domain says it accepts no mail (RFC 7505)."""
