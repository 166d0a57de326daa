"""Inbound verification: qremote-dkimverify, a QMAILQUEUE filter for qmail-smtpd."""
