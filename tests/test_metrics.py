"""What qremote shows of itself: a real Prometheus scrapes qremoted and verifyd and finds
each series with the values known deliveries must give; the JSON records field by field;
the same numbers in ``qremote status``; the dashboard names only series that exist."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import urllib.request

import pytest

from qremote.metrics import record
from qremote.metrics.counts import SERIES, SHAPING_SERIES, VERIFY_SERIES, Counts, group_label
from qremote.metrics.exposition import full_name, render
from qremote.metrics.http import AddressError, Endpoint
from qremote.metrics.trace import Trace
from qremote.tls.policy import Mode, Policy, kind_of
from tests.support import certs, keys
from tests.support.daemon import Qremoted
from tests.support.prometheus import Prometheus
from tests.support.smtpserver import Script, ScriptedServer, fresh_ip
from tests.support.waiting import wait_until

MESSAGE = b"From: a@example.org\nTo: b@example.net\nSubject: hi\n\nbody\n"
DASHBOARD = os.path.join(os.path.dirname(__file__), "..", "docs", "grafana-qremote.json")


# -- the numbers, without sockets --------------------------------------------------------


def test_a_delivery_is_counted_under_its_group_letter_and_facts():
    counts = Counts(started=1000.0)
    trace = Trace(
        group="google", tls="dane", opened=1, closed=["done"], signatures=("rsa-sha256",),
        sign_seconds=0.001, slot="waited", tcpto_skips=2, tls_failures=["validation-failure"],
    )  # fmt: skip
    counts.delivered(trace, "K", "rrs", 1.5)
    assert counts.get("deliveries", ("google", "K")) == 1
    assert counts.get("recipients", ("google", "accepted")) == 2
    assert counts.get("recipients", ("google", "deferred")) == 1
    assert counts.get("tls_sessions", ("google", "dane")) == 1
    assert counts.get("tls_failures", ("google", "validation-failure")) == 1
    assert counts.get("connections_opened", ("google",)) == 1
    assert counts.get("connections_closed", ("done",)) == 1
    assert counts.get("signatures", ("rsa-sha256",)) == 1
    assert counts.get("slot_waits", ("google",)) == 1
    assert counts.get("tcpto_skips", ("google",)) == 2
    assert counts.get("start_time_seconds") == 1000.0


def test_groups_no_rule_names_are_one_label_so_labels_stay_bounded():
    assert group_label("google") == "google"
    assert group_label("mx:mx1.example.net,mx2.example.net") == "other"
    assert group_label("") == "other"


def test_the_sum_of_workers_snapshots_only_grows():
    a, b = Counts(), Counts()
    a.delivered(Trace(group="g"), "K", "r", 0.2)
    first = Counts.merged([a.snapshot(), b.snapshot()])
    b.delivered(Trace(group="g"), "Z", "s", 0.3)
    a.delivered(Trace(group="g"), "K", "r", 0.4)
    second = Counts.merged([a.snapshot(), b.snapshot()])
    assert first.get("deliveries", ("g", "K")) == 1
    assert second.get("deliveries", ("g", "K")) == 2
    assert second.get("deliveries", ("g", "Z")) == 1
    assert second.histograms["delivery_seconds"][("g",)][-1] == pytest.approx(0.9)


def test_the_text_names_every_series_as_declared():
    counts = Counts()
    counts.delivered(Trace(group="g", signatures=("ed25519-sha256",)), "D", "h", 0.1)
    text = render(counts, SERIES).decode()
    assert 'qremote_deliveries_total{group="g",result="D"} 1.0' in text
    assert 'qremote_recipients_total{group="g",result="refused"} 1.0' in text
    assert 'qremote_delivery_seconds_bucket{group="g",le="0.1"} 1.0' in text
    assert 'qremote_signatures_total{algorithm="ed25519-sha256"} 1.0' in text
    for s in SERIES:
        assert f"# HELP {full_name(s).removesuffix('_total')}" in text or s.kind == "counter"


@pytest.mark.parametrize(
    ("policy", "tls", "planned", "kind"),
    [
        (Policy(Mode.OPPORTUNISTIC), False, True, "none"),
        (Policy(Mode.OPPORTUNISTIC), True, True, "opportunistic"),
        (Policy(Mode.REQUIRED, ca_file="x.pem"), True, True, "verified"),
        (Policy(Mode.REQUIRED, sts="enforce", system=True), True, True, "mta-sts"),
        (Policy(Mode.OPPORTUNISTIC, sts="testing", system=True), True, False, "mta-sts-testing"),
        (Policy(Mode.REQUIRED, ca_file="x.pem"), True, False, "opportunistic"),
    ],
)
def test_the_tls_kind_of_a_conversation(policy, tls, planned, kind):
    assert kind_of(policy, tls, planned) == kind


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("127.0.0.1:9716", Endpoint("127.0.0.1", 9716)),
        (":9800", Endpoint("127.0.0.1", 9800)),
        ("127.0.0.2", Endpoint("127.0.0.2", 9716)),
        ("on", Endpoint("127.0.0.1", 9716)),
        ("[::1]:9716", Endpoint("::1", 9716)),
        ("192.0.2.1:9716 public", Endpoint("192.0.2.1", 9716, True)),
    ],
)
def test_metrics_addresses_as_written(text, endpoint):
    assert Endpoint.parse(text) == endpoint


@pytest.mark.parametrize(
    "text", ["localhost:9716", "127.0.0.1:0", "127.0.0.1:http", "1.2.3.4:1 open", ""]
)
def test_a_metrics_address_that_is_not_one_is_refused_by_name(text):
    with pytest.raises(AddressError):
        Endpoint.parse(text)


def test_the_json_record_holds_the_text_lines_facts_and_the_traces():
    trace = Trace(
        group="example", mx_host="mx1.example.net", mx_ip="127.0.0.9", tls="opportunistic",
        tls_version="TLSv1.3", reused=True, signatures=("rsa-sha256", "domainkeys"),
    )  # fmt: skip
    line = record.delivery(
        trace, 42, "example.net", "a@example.org\n{forged}", "rr", "Kok " + "x" * 900, 0.5, True
    )
    assert "\n" not in line
    data = json.loads(line)
    assert data["sender"] == "a@example.org\n{forged}"  # escaped by JSON, never a new line
    assert data["result"] == "K" and len(data["report"]) == record.TEXT_LIMIT
    assert data["recipients"] == "rr" and data["reused"] is True
    assert data["signatures"] == ["rsa-sha256", "domainkeys"] and data["tls"] == "opportunistic"


# -- a real Prometheus scraping qremoted -------------------------------------------------


def _scrape(where: str) -> str:
    with urllib.request.urlopen(f"http://{where}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return answer.read().decode()


def _sample(text: str, name: str, labels: str = "") -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_prometheus_finds_each_series_with_what_the_deliveries_did(home, zone, tmp_path):
    home.write("mxgroups", "example:20:@example.net\n")
    home.write("reuseidle", "120\n")
    keys.publish(zone, "example.org", "s1", keys.write_key(home.control, "example.org", "s1"))
    ca = certs.Authority.create()
    trusted = certs.server_context(*ca.issue("mx.tls.example"), str(tmp_path / "tls"))
    untrusted = certs.server_context(
        *certs.self_signed("mx.badtls.example"), str(tmp_path / "bad")
    )
    home.write("tlshosts/mx.tls.example.pem", ca.pem().decode())
    home.write("tlshosts/mx.badtls.example.pem", ca.pem().decode())
    where = f"{fresh_ip()}:9716"
    with (
        ScriptedServer() as plain,
        ScriptedServer(Script(mail="451 4.3.0 try again later")) as soft,
        ScriptedServer(Script(mail="553 5.1.8 sender refused")) as hard,
        ScriptedServer(tls_context=trusted) as tls,
        ScriptedServer(tls_context=untrusted) as badtls,
    ):
        for domain, mx, server in [
            ("example.net", "mx1.example.net", plain),
            ("soft.example", "mx.soft.example", soft),
            ("hard.example", "mx.hard.example", hard),
            ("tls.example", "mx.tls.example", tls),
            ("badtls.example", "mx.badtls.example", badtls),
        ]:
            zone.mx(domain, (10, mx))
            zone.a(mx, server.ip)
        zone.mx("unreachable.example", (10, "mx.unreachable.example"))
        zone.a("mx.unreachable.example", fresh_ip())  # nothing listens there
        # Before qremoted runs: the thin client delivers in-process, and says so.
        early = home.deliver("example.net", "a@example.org", ["b@example.net"], MESSAGE)
        assert early.qmail[:1] == b"K"
        with (
            Qremoted(home, "--metrics", where, "--log-format", "json") as daemon,
            Prometheus({"qremoted": where}) as prometheus,
        ):
            letters = {}
            for domain in ["example.net", "example.net", "soft.example", "hard.example",
                           "tls.example", "badtls.example", "unreachable.example"]:  # fmt: skip
                run = home.deliver(domain, "a@example.org", [f"b@{domain}"], MESSAGE)
                letters.setdefault(domain, []).append(run.qmail[:1])
            unsigned = MESSAGE.replace(b"From: a@example.org", b"From: c@nokey.example")
            run = home.deliver("example.net", "c@nokey.example", ["b@example.net"], unsigned)
            letters["example.net"].append(run.qmail[:1])
            assert letters == {
                "example.net": [b"K", b"K", b"K"], "soft.example": [b"Z"],
                "hard.example": [b"D"], "tls.example": [b"K"], "badtls.example": [b"Z"],
                "unreachable.example": [b"Z"],
            }  # fmt: skip
            wait_until(lambda: daemon.log().count('{"event":"delivery"') == 8, 15)
            q = prometheus.wait_value
            assert q('qremote_deliveries_total{group="example",result="K"}', 3) == 3
            assert q('qremote_deliveries_total{group="other",result="K"}', 1) == 1
            assert q('qremote_deliveries_total{group="other",result="Z"}', 3) == 3
            assert q('qremote_deliveries_total{group="other",result="D"}', 1) == 1
            assert q('qremote_recipients_total{group="example",result="accepted"}', 3) == 3
            assert q('qremote_delivery_seconds_count{group="example"}', 3) == 3
            assert q('qremote_connections_opened_total{group="example"}', 1) == 1
            assert q('qremote_connections_reused_total{group="example"}', 2) == 2
            assert q('qremote_connect_failures_total{group="other"}', 1) == 1
            assert q('qremote_idle_connections{group="example"}', 1) == 1
            assert q('qremote_slots_in_use{group="example"}', 1) == 1
            assert q('qremote_tls_sessions_total{group="example",kind="none"}', 3) == 3
            assert q('qremote_tls_sessions_total{group="other",kind="verified"}', 1) == 1
            untrusted_ = 'result_type="certificate-not-trusted"'
            assert q(f'qremote_tls_failures_total{{group="other",{untrusted_}}}', 1) == 1
            assert q("qremote_tls_failures_total", 1) == 1  # no STARTTLS offered: no failure
            assert q('qremote_connections_closed_total{reason="tls-failed"}', 1) == 1
            assert q('qremote_signatures_total{algorithm="rsa-sha256"}', 7) == 7
            assert q('qremote_signatures_total{algorithm="domainkeys"}', 7) == 7
            assert q('qremote_unsigned_total{reason="no-key"}', 1) == 1
            assert q("qremote_signing_seconds_count", 8) == 8
            assert q("qremote_client_fallbacks_total", 1) == 1
            assert q("qremote_in_flight", 0) == 0
            assert q('qremote_dns_lookups_total{type="MX",result="answer"}', 8) == 8  # cached too
            assert (prometheus.value("qremote_start_time_seconds") or 0) > time.time() - 600
            # qremote status shows the same numbers, group by group.
            status = daemon.status() or ""
            assert "example: 3 K, 0 Z, 0 D; recipients 3 accepted, 0 deferred, 0 refused" in status
            assert "other: 1 K, 3 Z, 1 D;" in status
            assert f"metrics at http://{where}/metrics" in status
            found = prometheus.names()
            for expr in _dashboard_exprs():  # each panel's query runs as Prometheus reads it
                prometheus.query(_as_promql(expr))
        records = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    assert all(s in found for s in ("qremote_deliveries_total", "qremote_tls_sessions_total"))
    second = [r for r in records if r["reused"]][0]
    for volatile in ("time", "pid", "seconds", "sign_ms", "slot_seconds"):
        assert isinstance(second.pop(volatile), int | float)
    assert second.pop("report").startswith(f"K{plain.ip} accepted message. / Remote host said")
    assert second == {
        "event": "delivery", "host": "example.net", "sender": "a@example.org",
        "recipients": "r", "result": "K", "handed_back": True, "group": "example",
        "mx_host": "mx1.example.net", "mx_ip": plain.ip, "tls": "none", "tls_version": "",
        "reused": True, "connections": 0, "connect_failures": 0, "tls_failures": [],
        "signatures": ["rsa-sha256", "domainkeys"], "unsigned": "", "slot": "kept",
        "tcpto_skips": 0, "worker": None,
    }  # fmt: skip
    [verified] = [r for r in records if r["host"] == "tls.example"]
    assert verified["tls"] == "verified" and verified["tls_version"].startswith("TLS")
    assert verified["connections"] == 1 and verified["slot"] == "free"
    [failed] = [r for r in records if r["host"] == "badtls.example"]
    assert failed["result"] == "Z" and failed["tls_failures"] == ["certificate-not-trusted"]
    [unreachable] = [r for r in records if r["host"] == "unreachable.example"]
    assert unreachable["connect_failures"] == 1 and unreachable["connections"] == 0
    [nokey] = [r for r in records if r["sender"] == "c@nokey.example"]
    assert nokey["signatures"] == [] and nokey["unsigned"] == "no-key"


def test_a_text_log_is_unchanged_when_json_is_not_asked_for(home, zone):
    with ScriptedServer() as mx:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", mx.ip)
        with Qremoted(home) as daemon:
            home.deliver("example.net", "a@example.org", ["b@example.net"], MESSAGE)
            wait_until(lambda: "delivery pid" in daemon.log(), 15)
            assert "metrics at" not in (daemon.status() or "")
    assert not [line for line in daemon.log().splitlines() if line.startswith("{")]


def test_workers_answer_scrapes_with_all_their_numbers_which_never_go_down(home, zone):
    where = f"{fresh_ip()}:9716"
    with ScriptedServer() as mx:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", mx.ip)
        with Qremoted(home, "--workers", "2", "--metrics", where) as daemon:
            for _ in range(8):
                home.deliver("example.net", "a@example.org", ["b@example.net"], MESSAGE)
            total = 'qremote_deliveries_total{group="other",result="K"}'
            wait_until(lambda: _sample(_scrape(where), total) == 8, 15)
            before = [_sample(_scrape(where), total) for _ in range(10)]
            assert before == [8.0] * 10  # whichever worker answers
            worker = _a_worker_pid(daemon.proc.pid)
            os.kill(worker, signal.SIGKILL)
            wait_until(lambda: _a_worker_pid(daemon.proc.pid, other_than=worker) is not None)
            home.deliver("example.net", "a@example.org", ["b@example.net"], MESSAGE)
            wait_until(lambda: _sample(_scrape(where), total) == 9, 15)
            after = [_sample(_scrape(where), total) for _ in range(10)]
            assert after == [9.0] * 10  # the killed worker's counts were not lost


def _a_worker_pid(master: int, other_than: int | None = None) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == other_than:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            return int(entry)
    return None


# -- the /metrics server against hostile clients -----------------------------------------


def test_a_silent_or_flooding_client_costs_scrapes_never_deliveries(home, zone):
    from qremote.limits import METRICS_CLIENTS

    ip = fresh_ip()
    where = f"{ip}:9716"
    with ScriptedServer() as mx, Qremoted(home, "--metrics", where):
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", mx.ip)
        flood = socket.create_connection((ip, 9716))
        flood.settimeout(10)
        with contextlib.suppress(OSError):  # closed on us mid-flood is what is asked
            flood.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert _all_of(flood) == b""  # past METRICS_REQUEST_BYTES: closed unanswered
        silent = [socket.create_connection((ip, 9716)) for _ in range(METRICS_CLIENTS)]
        try:
            wait_until(lambda: _refused(ip), 10)  # one more is closed at once
            run = home.deliver("example.net", "a@example.org", ["b@example.net"], MESSAGE)
            assert run.qmail.startswith(b"K")  # mail goes on meanwhile
        finally:
            for s in silent:
                s.close()
        wait_until(lambda: "qremote_deliveries_total" in _scrape_when_there_is_room(where), 15)
        with urllib.request.urlopen(f"http://{where}/", timeout=10) as answer:
            assert b"/metrics" in answer.read()


def _scrape_when_there_is_room(where: str) -> str:
    """A scrape, or "" while the server still has no room (a closed client's place is
    given back a moment after it closed)."""
    try:
        return _scrape(where)
    except OSError:
        return ""


def _all_of(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            data += chunk
    sock.close()
    return data


def _refused(ip: str) -> bool:
    with socket.create_connection((ip, 9716)) as sock:
        sock.settimeout(5)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            return sock.recv(100) == b""
        except ConnectionResetError:
            return True


# -- verifyd -----------------------------------------------------------------------------


def test_prometheus_finds_verifyds_results(dns_server, zone, tmp_path):
    from qremote.signing.keys import KeyStore
    from qremote.signing.sign import SignConfig, sign_message
    from tests.support import qmailhome
    from tests.support.queue import StandInQueue
    from tests.support.verifyd import Verifyd, build_filter
    from tests.test_dkimverify import ENVELOPE

    top = tempfile.mkdtemp(prefix="qremote-verifyd-test-")  # verifyd's user reads it
    os.chmod(top, 0o755)
    site = qmailhome.make(os.path.join(top, "qmail"), dns_server.address)
    site.write("me", "mx.example.org\n")
    sender = os.path.join(top, "sender-control")
    keys.publish(zone, "example.com", "s1", keys.write_key(sender, "example.com", "s1"))
    msg = b"From: alice@example.com\nTo: bob@example.org\nSubject: hi\n\nbody\n"
    signed = sign_message(
        msg, b"alice@example.com", KeyStore(os.path.join(sender, "domainkeys")),
        SignConfig(domainkeys=False),
    ).headers + msg  # fmt: skip
    queue = StandInQueue(str(tmp_path / "queue"))
    queue.command = [build_filter(str(tmp_path))]
    where = f"{fresh_ip()}:9717"
    with Verifyd(site.path, "--metrics", where), Prometheus({"verifyd": where}) as prometheus:
        assert queue.run(site.path, signed, ENVELOPE).status == 0
        assert queue.run(site.path, msg, ENVELOPE).status == 0
        q = prometheus.wait_value
        assert q('qremote_verify_messages_total{outcome="verified"}', 2) == 2
        assert q('qremote_verify_results_total{method="dkim",result="pass"}', 1) == 1
        assert q('qremote_verify_results_total{method="dkim",result="none"}', 1) == 1
        assert q("qremote_verify_seconds_count", 2) == 2
        assert q('qremote_verify_key_cache_total{result="miss"}', 1) == 1
        assert q("qremote_verify_in_hand", 0) == 0
    shutil.rmtree(top, ignore_errors=True)


# -- check, and the dashboard ------------------------------------------------------------


def test_check_names_a_metrics_address_others_can_reach_unless_it_is_marked_public(home):
    from qremote.cli.check import problems

    home.write("metrics", "0.0.0.0:9716\n")
    [found] = [p for p in problems(home.path) if "control/metrics" in p]
    assert "is not loopback" in found and not found.startswith("note: ")
    home.write("metrics", "0.0.0.0:9716 public\n")
    [found] = [p for p in problems(home.path) if "control/metrics" in p]
    assert found.startswith("note: control/metrics: http://0.0.0.0:9716/metrics is not loopback")
    home.write("metrics", "127.0.0.1:9716\n")
    assert not [p for p in problems(home.path) if "control/metrics" in p]


def test_check_reads_qremoteds_own_numbers_and_its_metrics_option(home, zone):
    from qremote.cli.check import problems

    with ScriptedServer(Script(mail="451 4.7.28 rate limited")) as mx:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", mx.ip)
        with Qremoted(home, "--metrics", f"{fresh_ip()}:9716"):
            for _ in range(20):
                home.deliver("example.net", "a@example.org", ["b@example.net"], MESSAGE)
            found = problems(home.path)
    assert (
        "note: qremoted: MX group other: 20 of 20 deliveries since it started were not "
        "delivered (20 Z, 0 D); see its log for what the servers say"
    ) in found
    assert not [p for p in found if "--metrics" in p]  # loopback


def test_check_names_a_metrics_option_others_can_reach_from_qremoteds_status(home):
    from qremote.cli.check import _served

    # Said by a qremoted started with --metrics 192.0.2.1:9716 (the tests listen only on
    # loopback, so its status is written here).
    status = "qremoted pid 1, up 5s\nmetrics at http://192.0.2.1:9716/metrics\n"
    [found] = list(_served(home.path, status))
    assert found.startswith("qremoted --metrics: http://192.0.2.1:9716/metrics is not loopback")
    public = status.replace("/metrics\n", "/metrics public\n")
    [found] = list(_served(home.path, public))
    assert found.startswith("note: qremoted --metrics:")


def _dashboard_exprs() -> list[str]:
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _as_promql(expr: str) -> str:
    """A panel's query with Grafana's variables as Grafana fills them in."""
    return (
        expr.replace("$__rate_interval", "1m").replace("$__range", "5m").replace("$group", ".*")
    )


def test_the_dashboard_names_only_series_qremote_serves():
    served = set()
    for s in (*SERIES, *VERIFY_SERIES):
        name = full_name(s)
        served |= {name + "_bucket", name + "_sum", name + "_count"} if s.kind == "histogram" \
            else {name}  # fmt: skip
    reserved = {full_name(s) for s in SHAPING_SERIES}
    exprs = _dashboard_exprs()
    assert len(exprs) >= 12
    named = {n for e in exprs for n in re.findall(r"\bqremote_[a-z_]+", e)}
    assert named and named <= served, named - served
    assert not named & reserved  # not served yet: a panel would stay empty


def test_readme_lists_every_series_with_its_help():
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        readme = f.read()
    for s in (*SERIES, *VERIFY_SERIES, *SHAPING_SERIES):
        assert f"| `{full_name(s)}` | {s.kind} |" in readme, full_name(s)
        assert s.help in readme, full_name(s)


def test_a_delivery_that_waits_for_its_groups_slot_is_counted_and_seen_in_flight(home, zone):
    from tests.support.smtpserver import Slow

    home.write("mxgroups", "one:1:@example.net\n")
    home.write("reuseidle", "0\n")  # no kept connection brings the slot along
    where = f"{fresh_ip()}:9716"
    with ScriptedServer(Script(dot=Slow(2, "250 2.0.0 Ok"))) as mx:
        zone.mx("example.net", (10, "mx1.example.net"))
        zone.a("mx1.example.net", mx.ip)
        with Qremoted(home, "--metrics", where):
            runs: list = []
            threads = [
                threading.Thread(
                    target=lambda: runs.append(
                        home.deliver("example.net", "a@example.org", ["b@example.net"], MESSAGE)
                    )
                )
                for _ in range(2)
            ]
            for t in threads:
                t.start()

            def one_holds_the_other_waits() -> bool:
                now = _scrape(where)
                held = _sample(now, "qremote_slots_in_use", 'group="one"')
                return held == 1 and _sample(now, "qremote_in_flight") == 2

            wait_until(one_holds_the_other_waits, 15)
            for t in threads:
                t.join()
            text = _scrape(where)
    assert [r.qmail[:1] for r in runs] == [b"K", b"K"]
    assert _sample(text, "qremote_slot_waits_total", 'group="one"') == 1
    assert _sample(text, "qremote_slot_full_total", 'group="one"') == 0
    assert _sample(text, "qremote_in_flight") == 0


def test_a_client_that_says_nothing_is_dropped_after_the_request_time(home):
    from qremote.limits import METRICS_REQUEST_SECONDS

    ip = fresh_ip()
    with Qremoted(home, "--metrics", f"{ip}:9716"):
        silent = socket.create_connection((ip, 9716))
        silent.settimeout(METRICS_REQUEST_SECONDS + 10)
        started = time.monotonic()
        assert _all_of(silent) == b""  # closed on it, unanswered
        assert METRICS_REQUEST_SECONDS - 1 <= time.monotonic() - started
        assert time.monotonic() - started < METRICS_REQUEST_SECONDS + 5


def test_the_fallback_count_stops_at_its_bound(tmp_path):
    from qremote.daemon import wire
    from qremote.daemon.client import count_fallback

    home = str(tmp_path)
    count_fallback(home)  # makes qremote/ as qremoted would
    path = os.path.join(home, wire.FALLBACKS_PATH)
    assert os.path.getsize(path) == 1
    with open(path, "ab") as f:
        f.truncate(wire.FALLBACKS_MAX)
    count_fallback(home)
    assert os.path.getsize(path) == wire.FALLBACKS_MAX  # no longer counted, never grows
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
