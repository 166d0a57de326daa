"""qremoted: the long-lived delivery process and the thin clients that talk to it.

``wire`` is the byte protocol between them (sans I/O); ``client`` is the Python thin
client (standard library only: it starts once per delivery) and ``thinclient.c`` the
compiled one, built by ``compiled``; ``server`` is the asyncio daemon, with ``listener``
(the socket side), ``generations`` (settings reloaded when control/ changes) and
``formatting`` (its log lines and status); ``service`` writes the files that run it
under daemontools or systemd. The idle SMTP connections it keeps
between deliveries are ``qremote.smtp.pool``'s.
"""
