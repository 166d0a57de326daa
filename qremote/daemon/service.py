"""The files that run qremoted under daemontools/runit and systemd.

``qremote install --service DIR`` writes the daemontools ones and ``--systemd FILE`` the
unit for this installation, with the interpreter it was installed with; the copies in
``scripts/`` are the same texts for the usual paths (/var/qmail, qmailr, qmaill, and the
virtualenv /opt/qremote that README's installation makes).
"""

from __future__ import annotations

DEFAULT_COMMAND = "/opt/qremote/bin/qremote"

NOFILE = 262144
"""Descriptors qremoted may hold: three per delivery at most (qremote/daemon/descriptors.py),
so room for tens of thousands of clients; the usual 1024 has room for about 300."""


def run_script(home: str, command: str = DEFAULT_COMMAND, user: str = "qmailr") -> str:
    """``run`` for a supervise directory: qremoted as qmailr, its log lines on stdout."""
    return f"""#!/bin/sh
# qremoted under daemontools or runit: ln -s this directory into /service (or /etc/service).
# It logs one line per delivery; log/run stamps and keeps them with multilog.
exec 2>&1
QMAILHOME={home}
export QMAILHOME
# Descriptors: three per delivery; qremoted raises its soft limit to this hard one.
ulimit -n {NOFILE} 2>/dev/null || ulimit -n "$(ulimit -H -n)"
exec setuidgid {user} {command} daemon
"""


def log_script(user: str = "qmaill") -> str:
    return f"""#!/bin/sh
exec setuidgid {user} multilog t ./main
"""


def systemd_unit(
    home: str = "/var/qmail", command: str = DEFAULT_COMMAND, user: str = "qmailr"
) -> str:
    return f"""[Unit]
Description=qremoted, the qremote delivery daemon behind qmail-remote
Documentation=file:///usr/share/doc/qremote/README.md
After=network-online.target

[Service]
Type=simple
User={user}
Group=qmail
Environment=QMAILHOME={home}
ExecStart={command} daemon
ExecReload=/bin/kill -HUP $MAINPID
# Three descriptors per delivery at most; the usual 1024 has room for about 300.
LimitNOFILE={NOFILE}
# SIGTERM: in-flight deliveries get 30 seconds, then go back to qmail as deferrals.
KillSignal=SIGTERM
TimeoutStopSec=45
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""
