"""qremote: a drop-in replacement for qmail's qmail-remote.

The package is organised by capability, one folder each: ``smtp/`` (the SMTP
conversation as a sans-I/O state machine, its asyncio driver, kept connections),
``routing/`` (where a message goes and from which address), ``tls/`` (which TLS per MX),
``tcpto/`` (qmail's do-not-try list), ``groups/`` (MX-group caps), ``signing/``,
``verify/`` (the QMAILQUEUE filter), ``keys/`` (key management and rotation), ``daemon/``
(qremoted and the thin client) and ``cli/`` (the commands). ``delivery.py`` strings a
delivery together; ``limits.py`` holds every bound on hostile input; docs/DESIGN.md says
what qremote promises.
"""

__version__ = "0.1.0"
