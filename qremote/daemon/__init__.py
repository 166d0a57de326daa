"""qremoted: the long-lived delivery process and the thin client that talks to it.

``wire`` is the byte protocol between them (sans I/O), ``client`` is what the thin
``qmail-remote`` runs (standard library only: it starts once per delivery), ``server``
is the asyncio daemon, ``pool`` keeps idle SMTP connections between deliveries.
"""
