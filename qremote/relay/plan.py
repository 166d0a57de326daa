"""How to talk to one relay: its route and control/smtpauth, combined (a pure decision).

- Credentials: the route's own (smtproutes or authsenders, in either patch's form) win
  over ``control/smtpauth``'s for the relay; none at all means no AUTH.
- Implicit TLS (RFC 8314): ``tls=implicit`` in smtpauth, or port 465 unless it says
  ``tls=starttls``.
- A relay with credentials, or implicit TLS, needs TLS: required, never a plain-text
  fallback, verified as :mod:`qremote.tls.policy` says (system CAs by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from qremote.limits import AUTH_CREDENTIAL_MAX
from qremote.relay.smtpauth import AuthTable
from qremote.routing.routes import SUBMISSIONS_PORT, Credentials, Route, RouteError
from qremote.tls.policy import RelayTls


@dataclass(frozen=True)
class Relaying:
    credentials: Credentials | None
    mechanism: str | None
    """The mechanism the route names; None for the preference order."""
    implicit_tls: bool
    verify: bool
    where: str
    """The route's line, for messages (never its value)."""

    @property
    def needs_tls(self) -> bool:
        """Credentials, or implicit TLS: otherwise an ordinary MX-like hop."""
        return self.credentials is not None or self.implicit_tls

    @property
    def tls(self) -> RelayTls | None:
        """What the TLS policy must honour; None for an ordinary hop."""
        if not self.needs_tls:
            return None
        return RelayTls(self.where, self.implicit_tls, self.verify)

    def identity(self) -> tuple[str, str, bool] | None:
        """Tells connections apart for reuse: same account, mechanism and TLS way."""
        if not self.needs_tls:
            return None
        digest = self.credentials.digest() if self.credentials is not None else ""
        return digest, self.mechanism or "", self.implicit_tls


def relaying_for(route: Route, table: AuthTable) -> Relaying:
    """RouteError when the route or smtpauth cannot be used (messages name lines only)."""
    if table.problems:
        raise RouteError(table.problems[0])
    entry = table.entry(route.relay, route.port)
    credentials = route.credentials
    if credentials is not None and (
        len(credentials.user) > AUTH_CREDENTIAL_MAX
        or len(credentials.password) > AUTH_CREDENTIAL_MAX
    ):
        raise RouteError(f"{route.where}: user or password longer than {AUTH_CREDENTIAL_MAX} bytes")
    if credentials is None and entry is not None:
        credentials = entry.credentials
    way = entry.tls if entry is not None else None
    implicit = way == "implicit" or (way is None and route.port == SUBMISSIONS_PORT)
    return Relaying(
        credentials,
        entry.mechanism if entry is not None else None,
        implicit,
        entry.verify if entry is not None else True,
        route.where,
    )
