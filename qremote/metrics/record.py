"""A delivery as one JSON line, for log pipelines (``qremote daemon --log-format json``).

It holds what the text line holds (who, where, the letters, the report on one line, the
time taken) and the structured facts of the delivery's trace. Values from a sender or a
peer are cut as the text line cuts them; ``json.dumps`` escapes the rest, so no value can
end the line or forge another.
"""

from __future__ import annotations

import json
import time

from qremote.metrics.trace import Trace

TEXT_LIMIT = 300
"""Characters kept of a value from a sender or a peer (the text line keeps as many)."""


def _cut(text: str) -> str:
    return text[:TEXT_LIMIT]


def delivery(
    trace: Trace,
    pid: int,
    host: str,
    sender: str,
    letters: str,
    report: str,
    seconds: float,
    handed_back: bool,
    worker: int | None = None,
) -> str:
    """The JSON line of one delivery that ended with a report."""
    return _line(
        {
            **_who("delivery", pid, host, sender),
            "recipients": letters,
            "result": report[:1],
            "report": _cut(report),
            "seconds": round(seconds, 3),
            "handed_back": handed_back,
            **_where(trace),
            "tls": trace.tls,
            "tls_version": trace.tls_version,
            "reused": trace.reused,
            "connections": trace.opened,
            "connect_failures": trace.connect_failures,
            "tls_failures": trace.tls_failures,
            "signatures": list(trace.signatures),
            "unsigned": trace.unsigned,
            "sign_ms": round(trace.sign_seconds * 1000, 3),
            "slot": trace.slot,
            "slot_seconds": round(trace.slot_seconds, 3),
            "tcpto_skips": trace.tcpto_skips,
            "worker": worker,
        }
    )


def abandoned(
    trace: Trace, pid: int, host: str, sender: str, why: str, seconds: float,
    worker: int | None = None,
) -> str:  # fmt: skip
    """The JSON line of a delivery stopped before its final dot (nothing sent)."""
    return _line(
        {
            **_who("abandoned", pid, host, sender),
            "why": why,
            "seconds": round(seconds, 3),
            **_where(trace),
            "worker": worker,
        }
    )


def _who(event: str, pid: int, host: str, sender: str) -> dict[str, object]:
    return {
        "event": event,
        "time": round(time.time(), 3),
        "pid": pid,
        "host": _cut(host),
        "sender": _cut(sender),
    }


def _where(trace: Trace) -> dict[str, object]:
    return {"group": _cut(trace.group), "mx_host": _cut(trace.mx_host), "mx_ip": trace.mx_ip}


def _line(fields: dict[str, object]) -> str:
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
