"""A real authoritative DNS server, Debian's knotd, accepting TSIG-signed UPDATEs.

It serves ``example.com`` on 127.5.0.1:53 with two NS records: ns1 (itself) and ns2
(127.5.0.2, where a test can run a second, lagging server).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile

import dns.query
import dns.tsigkeyring
import dns.update

from tests.support.ports import wait_for_port

IP = "127.5.0.1"
SECOND_IP = "127.5.0.2"
KEY_NAME = "rotate"

ZONE = """$ORIGIN example.com.
$TTL 60
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
@ NS ns2
ns1 A {ip}
ns2 A {second}
"""

CONF = """server:
    listen: {ip}@53
    rundir: {dir}
database:
    storage: {dir}/db
key:
  - id: {key}
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: update
    key: {key}
    action: update
zone:
  - domain: example.com
    file: {dir}/example.com.zone
    acl: update
    zonefile-sync: -1
"""


class Knot:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="qremote-knot-")
        self.secret = base64.b64encode(os.urandom(32)).decode()
        self.proc: subprocess.Popen | None = None

    @property
    def tsig(self) -> str:
        return f"{KEY_NAME}:hmac-sha256:{self.secret}"

    def __enter__(self) -> Knot:
        binary = shutil.which("knotd")
        if binary is None:
            raise RuntimeError("knotd is not installed (scripts/setup installs knot)")
        os.makedirs(os.path.join(self.dir, "db"))
        with open(os.path.join(self.dir, "example.com.zone"), "w") as f:
            f.write(ZONE.format(ip=IP, second=SECOND_IP))
        conf = os.path.join(self.dir, "knot.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(ip=IP, dir=self.dir, key=KEY_NAME, secret=self.secret))
        self.proc = subprocess.Popen(
            [binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(IP, 53, "knotd")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def update(self, build) -> None:
        """Change the zone the way an administrator's tool would (independent of qremote)."""
        keyring = dns.tsigkeyring.from_text({KEY_NAME: ("hmac-sha256", self.secret)})
        message = dns.update.UpdateMessage("example.com.", keyring=keyring, keyname=KEY_NAME)
        build(message)
        answer = dns.query.tcp(message, IP, port=53, timeout=5)
        assert answer.rcode() == 0, answer

    def txt(self, name: str) -> list[bytes]:
        import dns.message

        answer = dns.query.tcp(dns.message.make_query(name, "TXT"), IP, port=53, timeout=5)
        return [b"".join(r.strings) for rr in answer.answer for r in rr]
