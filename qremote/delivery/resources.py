"""What a delivery uses besides its message: who owns it, and for how long.

qremoted keeps these between deliveries (a caching resolver, the Redis backend, the
connection pool, the TLS tally, MTA-STS policies in memory) and builds them in
:mod:`qremote.daemon.generations`; a standalone qmail-remote makes its own for one
delivery with :meth:`Resources.standalone` and closes them after it. Which of the two a
delivery runs under is decided here, where resources are made, never in its middle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qremote.groups import caps
from qremote.mtasts.store import PolicyStore
from qremote.settings import Settings
from qremote.smtp.pool import ConnectionPool
from qremote.tls.tally import Tally

if TYPE_CHECKING:  # dnspython is imported only when a name must be looked up
    from dns.asyncresolver import Resolver as AsyncResolver


@dataclass
class Resources:
    sts: PolicyStore
    """MTA-STS policies remembered in memory (and on disk)."""
    shared: caps.SharedState | None = None
    """The Redis backend for ``control/sharedstate`` (None: local caps only)."""
    pool: ConnectionPool | None = None
    """Idle SMTP connections (connection reuse); None: every connection ends with QUIT."""
    tally: Tally | None = None
    """Authenticated-TLS outcomes per MX group (``qremote status``)."""
    cached_resolver: AsyncResolver | None = None
    """A dnspython resolver; qremoted's has a cache that honours TTLs."""
    ask_siblings: Callable[[str], object] | None = None
    """A qremoted worker's: asks the other workers to close an idle connection of a full
    MX group (see :mod:`qremote.daemon.siblings`); None in a single process."""
    owned: bool = field(default=False)
    """Made for one delivery: :meth:`close` ends them (qremoted closes its own)."""

    @classmethod
    def standalone(cls, settings: Settings) -> Resources:
        """For one delivery by a process of its own: no pool, no tally; the Redis backend
        (if configured) is opened lazily and closed by :meth:`close`."""
        shared = caps.shared_backend(settings.shared_state, settings.shared_lease)
        return cls(PolicyStore(settings.home), shared, owned=True)

    def resolver(self, settings: Settings) -> AsyncResolver:
        """The resolver, made on first use (dnspython is loaded only then)."""
        if self.cached_resolver is None:
            from qremote.routing.dnsquery import make_resolver  # start-up: dnspython late

            self.cached_resolver = make_resolver(
                settings.nameservers, settings.timeout_connect, settings.timeout_remote
            )
        return self.cached_resolver

    async def close(self) -> None:
        """End what was made for one delivery (nothing of qremoted's)."""
        if self.owned and self.shared is not None:
            await self.shared.close()
