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


@pytest.fixture(scope="session")
def real_inject(tmp_path_factory):
    """notqmail's own qmail-inject (built once per run), for what reaches its arguments."""
    import os
    import shutil

    from tests.support import realqmail

    missing = None
    if not os.path.exists(realqmail.TARBALL):
        missing = f"{realqmail.TARBALL} is not there: qmail-inject cannot be built"
    elif shutil.which("make") is None or shutil.which("cc") is None:
        missing = "building qmail-inject needs make and a C compiler (Debian: build-essential)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the qmail-inject tests: {missing}")
        pytest.skip(missing)
    return realqmail.build_inject(str(tmp_path_factory.mktemp("qmail-inject")))
