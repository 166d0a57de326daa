"""DNSSEC for tests: Debian's knotd signs the zones, Debian's unbound validates them.

knotd (127.6.0.1:53) serves and signs ``dane.test`` (its keys made at start-up), serves
``insecure.test`` unsigned, and serves the signed child zone ``_tcp.bogusmx.dane.test``
whose DS in the parent matches none of its keys (so everything in it is bogus). unbound
(127.6.0.2:53) is a validating resolver whose only trust anchor is ``dane.test``'s key,
taken from knotd once it signed: names under it are secure (AD) or bogus (SERVFAIL),
every other name is insecure (no AD), as on a real host with the root's anchor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import dns.flags
import dns.message
import dns.query
import dns.rdatatype

from tests.support.ports import wait_for_port

SIGNER = "127.6.0.1"
RESOLVER = "127.6.0.2"
SECURE = "dane.test"
INSECURE = "insecure.test"
BOGUS_CHILD = "_tcp.bogusmx.dane.test"

KNOT_CONF = """server:
    listen: {ip}@53
    rundir: {dir}
database:
    storage: {dir}/db
policy:
  - id: fast
    algorithm: ecdsap256sha256
    single-type-signing: on
    rrsig-lifetime: 30d
    rrsig-refresh: 1d
template:
  - id: default
    storage: {dir}
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: {secure}
    file: {dir}/{secure}.zone
    dnssec-signing: on
    dnssec-policy: fast
  - domain: {bogus}
    file: {dir}/{bogus}.zone
    dnssec-signing: on
    dnssec-policy: fast
  - domain: {insecure}
    file: {dir}/{insecure}.zone
"""

UNBOUND_CONF = """server:
    interface: {ip}
    port: 53
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: "{dir}/unbound.log"
    verbosity: 1
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    do-ip6: no
    module-config: "validator iterator"
    trust-anchor-file: "{dir}/anchor"
    val-log-level: 2
    cache-max-ttl: 1
    cache-max-negative-ttl: 1
    infra-host-ttl: 1
    qname-minimisation: no
    harden-referral-path: no
    target-fetch-policy: "0 0 0 0 0"
    local-zone: "test." nodefault
stub-zone:
    name: "{secure}"
    stub-addr: {signer}
stub-zone:
    name: "{insecure}"
    stub-addr: {signer}
remote-control:
    control-enable: no
"""

SOA = "@ SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 1\n@ NS ns1.{zone}.\n"


def _zone(zone: str, body: str) -> str:
    return f"$ORIGIN {zone}.\n$TTL 1\n" + SOA.format(zone=zone) + body


class Dnssec:
    """``with Dnssec(records) as d:`` serves and validates; ``records`` are zone-file lines
    for dane.test (names relative to it), ``insecure`` for insecure.test."""

    def __init__(self, secure: str, insecure: str = "", bogus_child: str = "") -> None:
        self.dir = tempfile.mkdtemp(prefix="qremote-dnssec-")
        self.secure, self.insecure, self.bogus_child = secure, insecure, bogus_child
        self.procs: list[subprocess.Popen] = []

    def _write(self, name: str, text: str) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def __enter__(self) -> Dnssec:
        for program in ("knotd", "unbound"):
            if shutil.which(program) is None:
                raise RuntimeError(f"{program} is not installed (scripts/setup installs it)")
        os.makedirs(os.path.join(self.dir, "db"))
        # The bogus child: delegated, with a DS that matches none of its keys.
        delegation = (
            f"{BOGUS_CHILD}. NS ns1.{SECURE}.\n"
            f"{BOGUS_CHILD}. DS 12345 13 2 {'00' * 32}\n"
        )
        self._write(f"{SECURE}.zone", _zone(SECURE, f"ns1 A {SIGNER}\n" + delegation + self.secure))
        self._write(f"{INSECURE}.zone", _zone(INSECURE, f"ns1 A {SIGNER}\n" + self.insecure))
        self._write(f"{BOGUS_CHILD}.zone", _zone(BOGUS_CHILD, self.bogus_child))
        conf = self._write(
            "knot.conf",
            KNOT_CONF.format(
                ip=SIGNER, dir=self.dir, secure=SECURE, insecure=INSECURE, bogus=BOGUS_CHILD
            ),
        )
        self._start(["knotd", "-c", conf])
        wait_for_port(SIGNER, 53, "knotd")
        self._write("anchor", self._signed_key(SECURE) + "\n")
        self._signed_key(BOGUS_CHILD)
        conf = self._write(
            "unbound.conf",
            UNBOUND_CONF.format(
                ip=RESOLVER, dir=self.dir, signer=SIGNER, secure=SECURE, insecure=INSECURE
            ),
        )
        self._start(["unbound", "-d", "-c", conf])
        wait_for_port(RESOLVER, 53, "unbound")
        return self

    def _start(self, argv: list[str]) -> None:
        self.procs.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def _signed_key(self, zone: str) -> str:
        """The zone's DNSKEY once knotd has signed it, as a trust-anchor line."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            query = dns.message.make_query(zone + ".", "DNSKEY", want_dnssec=True)
            try:
                answer = dns.query.udp(query, SIGNER, port=53, timeout=2)
            except Exception:  # noqa: BLE001 - still starting
                answer = None
            if answer is not None:
                for rrset in answer.answer:
                    if rrset.rdtype == dns.rdatatype.DNSKEY:
                        return "\n".join(f"{zone}. 1 IN DNSKEY {r.to_text()}" for r in rrset)
            time.sleep(0.2)
        raise RuntimeError(f"knotd did not sign {zone}")

    def ask(self, name: str, rdtype: str) -> dns.message.Message:
        """What a client of the validating resolver is told (for the tests' own checks)."""
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        return dns.query.udp(query, RESOLVER, port=53, timeout=10)

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def secure(answer: dns.message.Message) -> bool:
    return bool(answer.flags & dns.flags.AD)
