"""Shared fixtures: a loopback DNS server, a qmail home with qremote installed."""

from __future__ import annotations

import pytest

from tests.support import qmailhome
from tests.support.dnsserver import DnsServer


@pytest.fixture(scope="session")
def dns_server():
    with DnsServer() as server:
        yield server


@pytest.fixture
def zone(dns_server):
    """A fresh zone per test on the session's DNS server."""
    from tests.support.dnsserver import Zone

    dns_server.udp.zone = dns_server.tcp.zone = dns_server.zone = Zone()
    return dns_server.zone


@pytest.fixture
def home(tmp_path, dns_server, zone):
    return qmailhome.make(str(tmp_path / "qmail"), dns_server.address)
