"""The files that run qremote's programs: qremoted and the verifying daemon under
daemontools/runit and systemd, and the cron jobs (key rotation, TLS reports).

``qremote install --service DIR`` writes the daemontools ones, ``--systemd FILE`` the unit
and ``--cron FILE`` the cron jobs for this installation, with the interpreter it was
installed with; the copies in ``scripts/`` are the same texts for the usual paths
(/var/qmail, qmailr, qmaill, and the virtualenv /opt/qremote that README's installation
makes), and a test holds them so.
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


def verifyd_run_script(home: str, command: str = DEFAULT_COMMAND, user: str = "qmaild") -> str:
    """``run`` for the verifying daemon's supervise directory. It starts as root and
    becomes ``user`` (qmail-smtpd's) itself, after loading everything it will need."""
    return f"""#!/bin/sh
# qremote's verifying daemon (behind bin/qremote-dkimverify) under daemontools or runit:
# ln -s this directory into /service (or /etc/service). It becomes {user}, qmail-smtpd's
# user, and never holds or reads the signing keys.
exec 2>&1
QMAILHOME={home}
export QMAILHOME
exec {command} verifyd --user {user}
"""


def verifyd_systemd_unit(
    home: str = "/var/qmail", command: str = DEFAULT_COMMAND, user: str = "qmaild"
) -> str:
    return f"""[Unit]
Description=qremote verifyd, the DKIM verifying daemon behind qremote-dkimverify
After=network-online.target

[Service]
Type=simple
# Started as root only to load everything and make its socket's folder; it then
# becomes {user} (qmail-smtpd's user) and never reads control/domainkeys/.
Environment=QMAILHOME={home}
ExecStart={command} verifyd --user {user}
ExecReload=/bin/kill -HUP $MAINPID
KillSignal=SIGTERM
TimeoutStopSec=45
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
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


def cron_jobs(home: str = "/var/qmail", command: str = DEFAULT_COMMAND) -> str:
    """/etc/cron.d/qremote: key rotation hourly, TLS reports daily after midnight UTC."""
    return f"""# /etc/cron.d/qremote: qremote's cron jobs, as root.
# Key rotation (qremote keys rotate): each run moves each domain at most one step (make,
# publish, verify in DNS, switch, withdraw after the grace period); hourly lets a new key
# go live soon after every name server serves it. Root, so that new keys can be given to
# qmailr. `qremote check` says when it has not run for more than a day.
17 * * * * root QMAILHOME={home} {command} keys rotate >> /var/log/qremote-rotate.log 2>&1
# SMTP TLS reports (RFC 8460; qremote tlsrpt send): every complete UTC day not yet
# reported, to each policy domain that asks for reports (_smtp._tls TXT), by mail through
# qmail-inject and by HTTPS.
23 0 * * * root QMAILHOME={home} {command} tlsrpt send >> /var/log/qremote-tlsrpt.log 2>&1
"""
