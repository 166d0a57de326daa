"""qmail-remote's fixed texts (qremote/report.py) where other programs must say the same."""

from __future__ import annotations


def test_the_thin_clients_usage_text_is_qmails():
    from qremote import report
    from qremote.cli import qmail_remote

    assert qmail_remote.USAGE == report.USAGE + b"\0"
