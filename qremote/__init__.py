"""qremote: a drop-in replacement for qmail's qmail-remote.

The package is organised by capability, one folder each (docs/LAYOUT.md lists every
module): ``smtp/`` (the SMTP conversation as a sans-I/O state machine, its asyncio
driver, kept connections), ``relay/`` (smarthosts with SMTP AUTH), ``routing/`` (where a
message goes, from which address, DNS), ``tls/`` (which TLS per host), ``dane/``,
``mtasts/``, ``tlsrpt/`` (TLS reports), ``intl/`` (IDN, SMTPUTF8), ``tcpto/`` (qmail's
do-not-try list), ``groups/`` (MX-group caps), ``signing/``, ``verify/`` (the QMAILQUEUE
filter), ``keys/`` (key management and rotation). ``delivery/`` strings a delivery
together, one module per step; ``daemon/`` is qremoted and the thin client; ``cli/`` the
commands. ``limits.py`` holds every bound on hostile input, ``report.py`` every report
text; docs/DESIGN.md says what qremote promises.
"""

__version__ = "0.1.0"
