"""The delivery: one message to one destination host, from qmail-remote's arguments to
qmail-remote's reports. The steps of docs/DESIGN.md section 3, one module each:

- :mod:`.signature`: what can never be sent is refused at once; the message is signed.
- :mod:`.route`: the relay or the MX hosts, with MTA-STS and DANE's lookups.
- :mod:`.slot`: the MX-group slot, or an idle kept connection that brings its own.
- :mod:`.connections`: the connection loop (tcpto, connect, the SMTP session, the pool),
  doing what :mod:`.attempt` decides: the next address, TLS fallbacks, reuse, the
  TLS-report verdicts. :mod:`.tlsplan` turns one address's TLS policy into a set-up.
- :mod:`.context`: what the connections of one delivery share; :mod:`.resources`: what
  qremoted keeps between deliveries and a standalone qmail-remote makes for one;
  :mod:`.outcome`: the reports and their notes.

:func:`deliver` (in :mod:`.core`) strings them together.
"""

from qremote.delivery.core import deliver, probe
from qremote.delivery.outcome import Outcome
from qremote.delivery.resources import Resources

__all__ = ["Outcome", "Resources", "deliver", "probe"]
