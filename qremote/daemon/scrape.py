"""qremoted's numbers for ``/metrics``, across its worker processes.

A single qremoted answers from its own :class:`~qremote.metrics.counts.Counts`. With
workers, each writes its counts to ``qremote/workers/<n>.metrics`` every second (as it
writes its status), and the one the kernel hands a scrape to writes its own first and
answers with the sum of every worker's file: each file only ever grows, so the sums
Prometheus sees never go down, whichever worker answers. A worker started again after
a crash begins from its predecessor's file, so its counters do not fall back to zero;
the master removes the files when it starts, and a new qremoted starts from zero.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from typing import Any

from qremote.atomic import replace_unsynced
from qremote.metrics.counts import Counts

SUFFIX = ".metrics"


def path(home: str, worker: int) -> str:
    return os.path.join(home, "qremote", "workers", f"{worker}{SUFFIX}")


def forget(home: str) -> None:
    """The master, before its workers start: the last run's numbers are not ours."""
    for stale in glob.glob(os.path.join(home, "qremote", "workers", "*" + SUFFIX)):
        with contextlib.suppress(OSError):
            os.unlink(stale)


def write(home: str, worker: int, counts: Counts) -> None:
    """This worker's counts where the others read them (whole or not at all)."""
    data = json.dumps(counts.snapshot(), separators=(",", ":")).encode()
    with contextlib.suppress(OSError):
        replace_unsynced(path(home, worker), data)


def read(home: str, worker: int) -> dict[str, Any] | None:
    try:
        with open(path(home, worker), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def summed(home: str, workers: int) -> Counts:
    """Every worker's last written counts, added up."""
    return Counts.merged(s for s in (read(home, n) for n in range(workers)) if s is not None)
