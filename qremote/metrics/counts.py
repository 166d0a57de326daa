"""The numbers qremoted keeps since it started, as plain data (no I/O, no library).

Every series is declared once in :data:`SERIES` (name, kind, labels, help): the
Prometheus text (:mod:`.exposition`), ``qremote status``, README's list and the
dashboard's test all read it. Counting is a dictionary increment, cheap enough to do
for every delivery (bench/metrics.py measures it); the library is used only to write
the text when Prometheus asks.

Labels stay bounded: an MX group is labelled with its name from ``control/mxgroups``,
and every group no rule names (``mx:<hosts>``, one per destination) is ``other``; the
other labels take values from fixed sets (letters, TLS kinds, RFC 8460 result types,
algorithms, DNS types). So the series number at most a few per configured group.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from qremote.metrics.trace import Trace

OTHER_GROUP = "other"


@dataclass(frozen=True)
class Series:
    name: str
    """Without the ``qremote_`` prefix and a counter's ``_total``."""
    kind: str
    """``counter``, ``gauge`` or ``histogram``."""
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()


DELIVERY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 1200.0)
SIGNING_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25)
VERIFY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)

START = Series("start_time_seconds", "gauge", (), "When this daemon started (Unix time).")

SERIES: tuple[Series, ...] = (
    # qremoted: deliveries
    Series("deliveries", "counter", ("group", "result"),
           "Deliveries ended, by MX group and the message report's letter (K, Z, D)."),
    Series("delivery_seconds", "histogram", ("group",),
           "Time from the delivery's start (its turn) to its report.", DELIVERY_BUCKETS),
    Series("recipients", "counter", ("group", "result"),
           "Recipients by the server's answer: accepted, deferred (4xx), refused (5xx)."),
    Series("abandoned", "counter", (),
           "Deliveries stopped before the final dot because their client stopped waiting."),
    Series("in_flight", "gauge", (), "Deliveries in hand, delivering or waiting their turn."),
    Series("waiting", "gauge", (), "Deliveries waiting for their turn (--deliveries)."),
    Series("client_fallbacks", "counter", (),
           "Deliveries the thin client ran in-process because qremoted did not take them "
           "(counted by the clients in qremote/fallbacks, since that file was made)."),
    # connections and TLS
    Series("connections_opened", "counter", ("group",), "SMTP connections opened."),
    Series("connections_reused", "counter", ("group",),
           "Messages sent on a kept connection instead of a new one."),
    Series("connect_failures", "counter", ("group",),
           "Connection attempts that failed (refused, unreachable, timed out)."),
    Series("connections_closed", "counter", ("reason",),
           "Connections closed: done, dropped, tls-failed, unused, idle, reload."),
    Series("idle_connections", "gauge", ("group",), "Kept connections waiting for a message."),
    Series("tls_sessions", "counter", ("group", "kind"),
           "Conversations by the TLS they ran: none, opportunistic, verified (tlshosts, "
           "relay), dane, mta-sts, mta-sts-testing."),
    Series("tls_failures", "counter", ("group", "result_type"),
           "TLS failures by RFC 8460 result type (what the TLS report says)."),
    # signing
    Series("signatures", "counter", ("algorithm",),
           "Signatures made: rsa-sha256, ed25519-sha256 (DKIM), domainkeys, arc (a set)."),
    Series("unsigned", "counter", ("reason",),
           "Messages sent or refused unsigned: no-key, unsignable."),
    Series("signing_seconds", "histogram", (), "Time to sign one message.", SIGNING_BUCKETS),
    # MX groups, tcpto, DNS
    Series("slots_in_use", "gauge", ("group",),
           "MX-group slots this qremoted holds (deliveries and kept connections)."),
    Series("slot_waits", "counter", ("group",), "Deliveries that waited for an MX-group slot."),
    Series("slot_full", "counter", ("group",),
           "Deliveries deferred because their MX group stayed full (mxgroupwait)."),
    Series("shaping_deferrals", "counter", ("group", "reason"),
           "Deliveries deferred at once by shaping.toml: rate, suspended, source, connection."),
    Series("tcpto_skips", "counter", ("group",),
           "Addresses skipped because qmail's tcpto holds them down."),
    Series("dns_lookups", "counter", ("type", "result"),
           "DNS queries by type and result: answer, nodata, nxdomain, failure (answers "
           "from qremoted's cache included)."),
    START,
)

VERIFY_SERIES: tuple[Series, ...] = (
    Series("verify_messages", "counter", ("outcome",),
           "Messages through qremote verifyd: verified, unchanged, rejected, deferred, "
           "refused."),
    Series("verify_results", "counter", ("method", "result"),
           "Verification results by method (dkim, domainkeys) and result (RFC 8601)."),
    Series("verify_seconds", "histogram", (), "Time to verify one message.", VERIFY_BUCKETS),
    Series("verify_in_hand", "gauge", (), "Messages in verifyd's hands."),
    Series("verify_key_cache", "counter", ("result",), "Key-record cache lookups: hit, miss."),
    START,
)

SHAPING_SERIES: tuple[Series, ...] = (
    Series("shaping_rate_limit", "gauge", ("group", "source"),
           "Messages per second allowed now for a path (reserved for traffic shaping)."),
    Series("shaping_suspended", "gauge", ("group",),
           "1 while a path is suspended (reserved for traffic shaping)."),
)
"""Names kept for traffic shaping's gauges, so they fit beside these; not served yet."""

_LETTERS = {"r": "accepted", "s": "deferred", "h": "refused"}
_KINDS = {s.name: s for s in (*SERIES, *VERIFY_SERIES)}


def group_label(group: str) -> str:
    """The label of an MX group: its name from control/mxgroups, ``other`` for the
    groups made of a destination's MX names (unbounded in number)."""
    return OTHER_GROUP if not group or group.startswith("mx:") else group


class Counts:
    """Counters, gauges and histograms by series name and label values."""

    def __init__(self, started: float | None = None) -> None:
        self.values: dict[str, dict[tuple[str, ...], float]] = {}
        self.histograms: dict[str, dict[tuple[str, ...], list[float]]] = {}
        """Per label values: a count per bucket (the last is +Inf), then the sum."""
        self.set("start_time_seconds", (), time.time() if started is None else started)

    # -- counting ------------------------------------------------------------------------

    def add(self, name: str, labels: tuple[str, ...] = (), n: float = 1) -> None:
        series = self.values.setdefault(name, {})
        series[labels] = series.get(labels, 0) + n

    def set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self.values.setdefault(name, {})[labels] = value

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        buckets = _KINDS[name].buckets
        row = self.histograms.setdefault(name, {}).get(labels)
        if row is None:
            row = self.histograms[name][labels] = [0.0] * (len(buckets) + 2)
        row[bisect.bisect_left(buckets, value)] += 1
        row[-1] += value

    def get(self, name: str, labels: tuple[str, ...] = ()) -> float:
        return self.values.get(name, {}).get(labels, 0)

    def delivered(self, trace: Trace, letter: str, recipients: str, seconds: float) -> None:
        """One delivery ended with the message report ``letter`` and the recipients'
        letters ``recipients`` (r, s, h each)."""
        group = group_label(trace.group)
        self.add("deliveries", (group, letter))
        self.observe("delivery_seconds", (group,), seconds)
        for r in recipients:
            self.add("recipients", (group, _LETTERS.get(r, "deferred")))
        if trace.opened:
            self.add("connections_opened", (group,), trace.opened)
        if trace.reused:
            self.add("connections_reused", (group,))
        if trace.connect_failures:
            self.add("connect_failures", (group,), trace.connect_failures)
        for reason in trace.closed:
            self.add("connections_closed", (reason,))
        if trace.tls:
            self.add("tls_sessions", (group, trace.tls))
        for result_type in trace.tls_failures:
            self.add("tls_failures", (group, result_type))
        for algorithm in trace.signatures:
            self.add("signatures", (algorithm,))
        if trace.unsigned:
            self.add("unsigned", (trace.unsigned,))
        if trace.signatures or trace.unsigned:
            self.observe("signing_seconds", (), trace.sign_seconds)
        if trace.slot == "waited":
            self.add("slot_waits", (group,))
        elif trace.slot == "full":
            self.add("slot_waits", (group,))
            self.add("slot_full", (group,))
        if trace.tcpto_skips:
            self.add("tcpto_skips", (group,), trace.tcpto_skips)
        if trace.shaped:
            self.add("shaping_deferrals", (group, trace.shaped))

    # -- between processes ---------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """As JSON-able data (a worker's file, read by the one answering a scrape)."""
        return {
            "values": {n: [[*k, v] for k, v in s.items()] for n, s in self.values.items()},
            "histograms": {
                n: [[*k, row] for k, row in s.items()] for n, s in self.histograms.items()
            },
        }

    def merge(self, snapshot: dict[str, Any], gauges: bool = True) -> None:
        """Add a snapshot's numbers to these (counters and histograms add up; gauges
        too, being per-process amounts, except where ``gauges`` is False)."""
        for name, rows in snapshot.get("values", {}).items():
            kind = _KINDS.get(name)
            if kind is None or (kind.kind == "gauge" and not gauges):
                continue
            for row in rows:
                labels, value = tuple(row[:-1]), row[-1]
                if name == "start_time_seconds":
                    old = self.values.get(name, {}).get(labels)
                    self.set(name, labels, value if old is None else min(old, value))
                else:
                    self.add(name, labels, value)
        for name, rows in snapshot.get("histograms", {}).items():
            if name not in _KINDS:
                continue
            series = self.histograms.setdefault(name, {})
            for row in rows:
                labels, numbers = tuple(row[:-1]), row[-1]
                mine = series.get(labels)
                if mine is None or len(mine) != len(numbers):
                    series[labels] = list(numbers)
                else:
                    series[labels] = [a + b for a, b in zip(mine, numbers, strict=True)]

    @classmethod
    def merged(cls, snapshots: Iterable[dict[str, Any]]) -> Counts:
        total = cls(started=0)
        total.values.pop("start_time_seconds")
        for snap in snapshots:
            total.merge(snap)
        return total

    # -- for qremote status --------------------------------------------------------------

    def group_lines(self) -> list[str]:
        """Per MX group since start: deliveries by letter, recipients by answer."""
        groups: dict[str, dict[str, float]] = {}
        for (group, letter), n in self.values.get("deliveries", {}).items():
            groups.setdefault(group, {})[letter] = n
        for (group, result), n in self.values.get("recipients", {}).items():
            groups.setdefault(group, {})[result] = n
        lines = []
        for group in sorted(groups):
            c = groups[group]
            lines.append(
                f"{group}: {c.get('K', 0):.0f} K, {c.get('Z', 0):.0f} Z, {c.get('D', 0):.0f} D;"
                f" recipients {c.get('accepted', 0):.0f} accepted, "
                f"{c.get('deferred', 0):.0f} deferred, {c.get('refused', 0):.0f} refused"
            )
        return lines
