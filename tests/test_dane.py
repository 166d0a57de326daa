"""DANE (RFC 7672) against a real DNSSEC pair: knotd signs the zones, unbound validates
them on loopback; aiosmtpd MX hosts with certificates made here, and TLSA records that
match them, do not, or cannot be believed."""

from __future__ import annotations

import hashlib
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support import certs
from tests.support.daemon import Qremoted
from tests.support.dnssec import RESOLVER, SIGNER, Dnssec
from tests.support.httpsserver import HttpsServer, Page
from tests.support.smtpserver import ScriptedServer, fresh_ip

MSG = b"From: a@example.org\nSubject: dane\n\nbody\n"
ZEROS = "00" * 32


def spki(pem: bytes) -> bytes:
    cert = x509.load_pem_x509_certificate(pem)
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


class World:
    """Every MX host of these tests: its address, its certificate, its DNS records."""

    def __init__(self) -> None:
        self.ca = certs.Authority.create("DANE test CA")
        self.ip: dict[str, str] = {}
        self.cert: dict[str, tuple[bytes, bytes]] = {}
        secure: list[str] = []
        insecure: list[str] = []

        def host(name: str, cert_name: str | None = None, zone: list[str] = secure) -> str:
            self.ip[name] = fresh_ip()
            self.cert[name] = self.ca.issue(cert_name or f"{name}.dane.test")
            zone.append(f"{name} A {self.ip[name]}")
            return name

        def mx(domain: str, target: str) -> None:
            secure.append(f"{domain} MX 10 {target}")

        def tlsa(name: str, record: str) -> None:
            secure.append(f"_25._tcp.{name} TLSA {record}")

        for name in ("mx-ee311", "mx-ee301", "mx-ta211", "mx-wrong", "mx-plain", "mx-pkix"):
            host(name)
            mx("d-" + name[3:], name)
        tlsa("mx-ee311", "3 1 1 " + hashlib.sha256(spki(self.cert["mx-ee311"][0])).hexdigest())
        tlsa("mx-ee301", "3 0 1 " + hashlib.sha256(der(self.cert["mx-ee301"][0])).hexdigest())
        tlsa("mx-ta211", "2 1 1 " + hashlib.sha256(spki(self.ca.pem())).hexdigest())
        tlsa("mx-wrong", f"3 1 1 {ZEROS}")
        tlsa("mx-plain", "3 1 1 " + hashlib.sha256(spki(self.cert["mx-plain"][0])).hexdigest())
        tlsa("mx-pkix", f"1 1 1 {ZEROS}")
        # DANE-TA with the next-hop domain in the certificate, or a name that is neither.
        host("mx-tanh", "d-tanh.dane.test")
        mx("d-tanh", "mx-tanh")
        host("mx-taname", "other.example")
        mx("d-taname", "mx-taname")
        for name in ("mx-tanh", "mx-taname"):
            tlsa(name, "2 1 1 " + hashlib.sha256(spki(self.ca.pem())).hexdigest())
        # A host whose TLSA records sit in a zone with a broken chain of trust (bogus).
        host("bogusmx")
        mx("d-bogus", "bogusmx")
        bogus_child = f"_25 TLSA 3 1 1 {ZEROS}\n"
        # A host whose TLSA records are in a zone whose only server does not answer.
        host("lamemx")
        mx("d-lame", "lamemx")
        secure.append("_tcp.lamemx NS ns-lame")
        secure.append("ns-lame A 127.6.0.9")
        # CNAMEs (RFC 7672 section 2.2.2): the expanded name's TLSA, else the original's.
        secure.append("alias CNAME mx-ee311")
        mx("d-cname", "alias")
        host("mx-bare")
        secure.append("alias2 CNAME mx-bare")
        tlsa("alias2", "3 1 1 " + hashlib.sha256(spki(self.cert["mx-bare"][0])).hexdigest())
        mx("d-cname2", "alias2")
        # DANE and MTA-STS on one domain: the policy server's address.
        self.web_ip = fresh_ip()
        mx("d-both", "mx-ee311")
        secure.append('_mta-sts.d-both TXT "v=STSv1; id=1"')
        secure.append(f"mta-sts.d-both A {self.web_ip}")
        # An unsigned zone, and a signed domain whose MX is in it.
        host("mx", "mx.insecure.test", insecure)
        insecure.append("@ MX 10 mx")
        insecure.append(f"_25._tcp.mx TLSA 3 1 1 {ZEROS}")
        secure.append("d-mixed MX 10 mx.insecure.test.")
        self.zones = ("\n".join(secure) + "\n", "\n".join(insecure) + "\n", bogus_child)

    def tls(self, tmp_path, name: str, chain: bool = False):
        cert, key = self.cert[name]
        if chain:
            cert = cert + self.ca.pem()
        return certs.server_context(cert, key, str(tmp_path / name))


@pytest.fixture(scope="module")
def world():
    made = World()
    with Dnssec(*made.zones):
        yield made


@pytest.fixture
def dane_home(home):
    home.write("nameservers", f"{RESOLVER}:53\n")
    return home


def deliver(home, domain: str):
    run = home.deliver(domain, "a@example.org", [f"b@{domain}"], MSG)
    assert run.status == 0
    return run


def mx(world, tmp_path, name: str, tls: bool = True, chain: bool = False) -> ScriptedServer:
    context = world.tls(tmp_path, name, chain) if tls else None
    return ScriptedServer(ip=world.ip[name], tls_context=context)


def nothing_sent(server: ScriptedServer) -> bool:
    return not server.received and not any(
        c.startswith("MAIL") for conn in server.connections for c in conn.commands
    )


@pytest.mark.parametrize("host,usage", [("mx-ee311", 3), ("mx-ee301", 3), ("mx-ta211", 2)])
def test_matching_tlsa_records_authenticate_the_mx(world, dane_home, tmp_path, host, usage):
    with mx(world, tmp_path, host, chain=usage == 2) as srv:
        run = deliver(dane_home, "d-" + host[3:] + ".dane.test")
    assert run.qmail.startswith(b"K"), run.qmail
    assert f", verified by DANE (usage {usage})\n".encode() in run.reports[-1]
    assert srv.connections[0].tls


def test_dane_ta_accepts_the_next_hop_domain_as_the_name(world, dane_home, tmp_path):
    with mx(world, tmp_path, "mx-tanh", chain=True):
        run = deliver(dane_home, "d-tanh.dane.test")
    assert run.qmail.startswith(b"K") and b"verified by DANE (usage 2)" in run.qmail


def test_dane_ta_refuses_a_certificate_for_another_name(world, dane_home, tmp_path):
    with mx(world, tmp_path, "mx-taname", chain=True) as srv:
        run = deliver(dane_home, "d-taname.dane.test")
    assert run.qmail.startswith(b"Z") and b"TLS failed: DANE: DANE-TA:" in run.qmail
    assert nothing_sent(srv)


def test_a_wrong_digest_is_temporary_and_nothing_is_sent(world, dane_home, tmp_path):
    with mx(world, tmp_path, "mx-wrong") as srv:
        run = deliver(dane_home, "d-wrong.dane.test")
    assert run.qmail.startswith(b"Z"), run.qmail
    assert b"TLS failed: DANE: no TLSA record (3 1 1) matches the server's certificates" in (
        run.qmail
    )
    assert nothing_sent(srv) and len(srv.connections) == 1  # no plain-text retry


def test_a_dane_host_without_starttls_gets_nothing_in_clear(world, dane_home, tmp_path):
    with mx(world, tmp_path, "mx-plain", tls=False) as srv:
        run = deliver(dane_home, "d-plain.dane.test")
    assert run.qmail.startswith(b"Z") and b"TLS is required and was not negotiated" in run.qmail
    assert nothing_sent(srv)


def test_unusable_tlsa_records_mean_encryption_without_authentication(world, dane_home, tmp_path):
    with mx(world, tmp_path, "mx-pkix") as srv:
        run = deliver(dane_home, "d-pkix.dane.test")
    assert run.qmail.startswith(b"K") and b", not verified\n" in run.reports[-1]
    assert srv.connections[0].tls
    with mx(world, tmp_path, "mx-pkix", tls=False) as srv:
        run = deliver(dane_home, "d-pkix.dane.test")
    assert run.qmail.startswith(b"Z") and nothing_sent(srv)


def test_a_bogus_tlsa_answer_means_the_host_is_not_tried(world, dane_home, tmp_path):
    with mx(world, tmp_path, "bogusmx") as srv:
        run = deliver(dane_home, "d-bogus.dane.test")
    assert run.qmail.startswith(b"Z"), run.qmail
    assert b"Not trying bogusmx.dane.test" in run.qmail
    assert b"the TLSA lookup for _25._tcp.bogusmx.dane.test failed" in run.qmail
    assert not srv.connections


def test_a_tlsa_lookup_that_servfails_means_the_host_is_not_tried(world, dane_home, tmp_path):
    with mx(world, tmp_path, "lamemx") as srv:
        run = deliver(dane_home, "d-lame.dane.test")
    assert run.qmail.startswith(b"Z"), run.qmail
    assert b"the TLSA lookup for _25._tcp.lamemx.dane.test failed" in run.qmail
    assert not srv.connections


@pytest.mark.parametrize("domain", ["insecure.test", "d-mixed.dane.test"])
def test_an_unsigned_mx_is_opportunistic_as_before(world, dane_home, tmp_path, domain):
    """TLSA records (here: wrong ones) count only when DNSSEC vouches for the MX host."""
    with mx(world, tmp_path, "mx"):
        run = deliver(dane_home, domain)
    assert run.qmail.startswith(b"K"), run.qmail
    assert b", not verified\n" in run.reports[-1] and b"DANE" not in run.reports[-1]


@pytest.mark.parametrize(
    "domain,host", [("d-cname.dane.test", "mx-ee311"), ("d-cname2.dane.test", "mx-bare")]
)
def test_cname_the_expanded_names_records_then_the_originals(
    world, dane_home, tmp_path, domain, host
):
    with mx(world, tmp_path, host):
        run = deliver(dane_home, domain)
    assert run.qmail.startswith(b"K"), run.qmail
    assert b"verified by DANE (usage 3)" in run.qmail


def test_a_resolver_that_does_not_validate_is_never_believed(world, home, tmp_path):
    """knotd itself answers with authority but no AD: DANE is never asserted, and check
    says why."""
    home.write("nameservers", f"{SIGNER}:53\n")
    home.write("danecheck", "dane.test\n")
    with mx(world, tmp_path, "mx-wrong"):
        run = deliver(home, "d-wrong.dane.test")
    assert run.qmail.startswith(b"K") and b"not verified" in run.qmail
    out = home.qremote("check", "--user", "root").stdout
    assert f"the resolver ({SIGNER}) does not validate DNSSEC" in out


def test_check_is_content_with_a_validating_resolver(world, dane_home):
    dane_home.write("danecheck", "dane.test\n")
    out = dane_home.qremote("check", "--user", "root").stdout
    assert "DNSSEC" not in out and "control/dane" not in out


def test_tlshosts_pem_wins_unless_dane_first(world, dane_home, tmp_path):
    dane_home.write("tlshosts/mx-wrong.dane.test.pem", world.ca.pem().decode())
    with mx(world, tmp_path, "mx-wrong"):
        run = deliver(dane_home, "d-wrong.dane.test")
        assert run.qmail.startswith(b"K") and b", verified\n" in run.reports[-1]
        dane_home.write("dane", "first\n")
        run = deliver(dane_home, "d-wrong.dane.test")
        assert run.qmail.startswith(b"Z") and b"DANE: no TLSA record" in run.qmail


def test_notlshosts_means_plain_text_and_no_dane(world, dane_home, tmp_path):
    dane_home.write("notlshosts/mx-wrong.dane.test", "")
    with mx(world, tmp_path, "mx-wrong") as srv:
        run = deliver(dane_home, "d-wrong.dane.test")
    assert run.qmail.startswith(b"K") and not srv.connections[0].tls


def test_dane_off(world, dane_home, tmp_path):
    dane_home.write("dane", "off\n")
    with mx(world, tmp_path, "mx-wrong"):
        run = deliver(dane_home, "d-wrong.dane.test")
    assert run.qmail.startswith(b"K") and b"not verified" in run.qmail


def test_qremoted_resumes_only_what_dane_authenticated_and_counts(world, dane_home, tmp_path):
    from tests.test_metrics import _sample, _scrape

    dane_home.write("reuseidle", "0\n")  # a new connection each time
    where = f"{fresh_ip()}:9716"
    with mx(world, tmp_path, "mx-ee311"), mx(world, tmp_path, "mx-wrong"):
        with Qremoted(dane_home, "--metrics", where) as daemon:
            first = deliver(dane_home, "d-ee311.dane.test")
            second = deliver(dane_home, "d-ee311.dane.test")
            failed = deliver(dane_home, "d-wrong.dane.test")
            status = daemon.status()
            numbers = _scrape(where)
    assert _sample(numbers, "qremote_tls_sessions_total", 'group="other",kind="dane"') == 2
    failure = r'^qremote_tls_failures_total\{group="other",result_type="\S+"\} 1\.0$'
    assert len(re.findall(failure, numbers, re.M)) == 1, numbers
    assert b"verified by DANE (usage 3)\n" in first.output
    assert b"verified by DANE, resumed\n" in second.output
    assert failed.qmail.startswith(b"Z")
    assert "DANE to mx:mx-ee311.dane.test: 2 authenticated, 0 failed" in status
    assert "DANE to mx:mx-wrong.dane.test: 0 authenticated, 1 failed" in status


def test_dane_takes_precedence_over_mta_sts(world, dane_home, tmp_path):
    """The policy server's certificate is from the system's CAs, the MX host's is not:
    WebPKI (MTA-STS) would refuse it, DANE authenticates it (RFC 8461 section 2)."""
    web_ca = certs.Authority.create("web CA")
    (tmp_path / "system-ca.pem").write_bytes(web_ca.pem())
    env = {"SSL_CERT_FILE": str(tmp_path / "system-ca.pem")}
    site = certs.server_context(*web_ca.issue("mta-sts.d-both.dane.test"), str(tmp_path / "w"))
    body = b"version: STSv1\nmode: enforce\nmx: mx-ee311.dane.test\nmax_age: 86400\n"
    with HttpsServer(site, ip=world.web_ip) as web, mx(world, tmp_path, "mx-ee311"):
        web.page("mta-sts.d-both.dane.test", "/.well-known/mta-sts.txt", Page(body=body))
        run = dane_home.deliver(
            "d-both.dane.test", "a@example.org", ["b@d-both.dane.test"], MSG, env=env
        )
    assert run.qmail.startswith(b"K"), run.qmail
    assert b"verified by DANE (usage 3)" in run.qmail and len(web.requests) == 1
