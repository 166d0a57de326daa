"""``qremote tlsrpt send``: the daily job that reports each complete UTC day (RFC 8460).

For every day before today (UTC, ``--now`` for tests) whose session lines have not been
reported: per policy domain, the ``rua`` of ``_smtp._tls.<domain>``; the report goes to
each ``mailto:`` through ``$QMAILHOME/bin/qmail-inject`` (so it leaves through qmail and
qremote, DKIM-signed by the reporting domain's key, RFC 8460 section 3) and to each
``https:`` by POST. A day's file is renamed ``<day>.reported`` once every domain in it
was reported (or has no ``rua``); a domain whose report could not be handed on is tried
again by the next run, up to a week, and never sent twice: the domains done are kept in
``<day>.done``.

The ``rua`` is the receiving domain's to write, so it is read strictly
(:mod:`qremote.tlsrpt.rua`): at most :data:`~qremote.limits.TLSRPT_MAX_RUA` targets, a
plain address per ``mailto:``, handed to qmail-inject as ``-a -f <contact> -- <address>``
(recipients from the arguments only, never from the header; nothing after ``--`` is an
option). The whole run is bounded by :data:`~qremote.limits.TLSRPT_JOB_TIME`; what it
does not reach is left for the next run. Nothing one domain's record or server does
stops the reports of the others.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qremote.atomic import write_file
from qremote.control import ControlDir
from qremote.https import HttpsError, request
from qremote.limits import STS_FETCH_TIMEOUT, TLSRPT_INJECT_TIMEOUT, TLSRPT_JOB_TIME
from qremote.routing.dnserrors import DnsHard, DnsSoft
from qremote.routing.dnsquery import make_resolver, query
from qremote.routing.resolve import first_address
from qremote.settings import load_settings, report_contact
from qremote.tlsrpt.record import day_of, folder
from qremote.tlsrpt.report import HeaderError, Report, build, message
from qremote.tlsrpt.rua import host_name, parse_rua, shown

if TYPE_CHECKING:
    from dns.asyncresolver import Resolver as AsyncResolver

    from qremote.settings import Settings

GIVE_UP_DAYS = 7
"""A day whose reports could not all be handed on is dropped after this many days."""

KEEP_DAYS = 30
"""A reported day's session lines (``<day>.reported``, ``<day>.done``) are kept this long,
for an administrator who wants to see what was reported, then deleted by the job."""


@dataclass(frozen=True)
class Reporter:
    """Who the reports come from and how they are mailed (control/tlsrptorg,
    control/tlsrptcontact, qmail-inject)."""

    org: str
    contact: str
    inject: str


def load(home: str) -> Reporter:
    control = ControlDir(os.path.join(home, "control"))
    me = (control.line("me") or "localhost").strip()
    org = (control.line("tlsrptorg") or me).strip()
    return Reporter(org, report_contact(control), os.path.join(home, "bin", "qmail-inject"))


def pending_days(home: str, now: float) -> list[str]:
    today = day_of(now)
    try:
        names = os.listdir(folder(home))
    except OSError:
        return []
    return sorted(n[:-4] for n in names if n.endswith(".log") and n[:-4] < today)


class Clock:
    """The run's time budget: each step gets what is left, never more than its own bound."""

    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget

    def left(self, most: float) -> float:
        return max(0.0, min(most, self.deadline - time.monotonic()))

    def out(self) -> bool:
        return self.left(1.0) <= 0.0


def run(home: str, now: float | None = None, budget: float = TLSRPT_JOB_TIME) -> list[str]:
    """One line per report handed on (or failure, or skip); reports every pending day
    within ``budget`` seconds."""
    moment = time.time() if now is None else now
    reporter = load(home)
    said: list[str] = []
    resolver = _resolver(load_settings(home))
    said.extend(forget_old(home, moment))
    clock = Clock(budget)
    for day in pending_days(home, moment):
        said.extend(asyncio.run(_day(home, day, reporter, resolver, moment, clock)))
        if clock.out():
            said.append(f"stopped after {budget:g} seconds; the rest waits for the next run")
            break
    return said


def forget_old(home: str, now: float) -> list[str]:
    """Delete reported days older than KEEP_DAYS (by the day in their name)."""
    oldest = day_of(now - KEEP_DAYS * 86400)
    try:
        names = os.listdir(folder(home))
    except OSError:
        return []
    gone = []
    for name in sorted(names):
        day, dot, kind = name.partition(".")
        if dot and kind in ("reported", "done") and len(day) == 10 and day < oldest:
            try:
                os.unlink(os.path.join(folder(home), name))
                gone.append(name)
            except OSError:
                pass
    return [f"deleted {len(gone)} files of days reported before {oldest}"] if gone else []


def _resolver(settings: Settings) -> AsyncResolver:

    return make_resolver(settings.nameservers, settings.timeout_connect, settings.timeout_remote)


async def _day(
    home: str, day: str, reporter: Reporter, resolver: AsyncResolver, now: float, clock: Clock
) -> list[str]:
    path = os.path.join(folder(home), day + ".log")
    done_path = os.path.join(folder(home), day + ".done")
    by_domain: dict[str, list[dict]] = {}
    with open(path, "rb") as f:
        for raw in f:
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a torn line (a full disk): not a session we can count
            if isinstance(line, dict) and isinstance(line.get("domain"), str):
                by_domain.setdefault(line["domain"], []).append(line)
    done = set(_read_lines(done_path))
    said: list[str] = []
    failed = False
    for domain in sorted(by_domain):
        if domain in done:
            continue
        if clock.out():
            return said  # the day stays pending; the next run goes on from here
        try:
            ok, lines = await _domain(day, domain, by_domain[domain], reporter, resolver, clock)
        except Exception as e:  # noqa: BLE001 - one domain must not stop the others
            ok, lines = False, [f"{day} {shown(domain)}: failed ({e.__class__.__name__}); next run"]
        said.extend(lines)
        if ok:
            done.add(domain)
            write_file(done_path, "".join(d + "\n" for d in sorted(done)).encode(), 0o644)
        else:
            failed = True
    too_old = day < day_of(now - GIVE_UP_DAYS * 86400)
    if not failed or too_old:
        os.rename(path, os.path.join(folder(home), day + ".reported"))
        if failed:
            said.append(
                f"{day}: some reports could not be sent within {GIVE_UP_DAYS} days; dropped"
            )
    return said


def _read_lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except OSError:
        return []


async def _domain(
    day: str, domain: str, lines: list[dict], reporter: Reporter, resolver, clock: Clock
) -> tuple[bool, list[str]]:

    if not host_name(domain):
        return True, [f"{day} {shown(domain)}: not a domain name; no report"]
    try:
        answer = await query(resolver, f"_smtp._tls.{domain}", "TXT")
    except DnsHard:
        return True, []
    except DnsSoft as e:
        return False, [f"{day} {domain}: cannot look up _smtp._tls.{domain} ({e}); next run"]
    rua = parse_rua([b"".join(r.strings) for r in answer])
    said = [f"{day} {domain}: {why}" for why in rua.skipped]
    if not rua.targets:
        return True, said
    report = build(day, domain, lines, reporter.org, reporter.contact)
    ok = True
    for target in rua.targets:
        if clock.out():
            return False, [*said, f"{day} {domain}: out of time; next run"]
        try:
            if target.kind == "mailto":
                _mail(report, target.where, reporter, clock.left(TLSRPT_INJECT_TIMEOUT))
            else:
                await _post(report, target.where, resolver, clock.left(STS_FETCH_TIMEOUT))
            said.append(f"{day} {domain}: report {report.report_id} sent to {target}")
        except (OSError, HeaderError, subprocess.SubprocessError) as e:
            ok = False
            said.append(f"{day} {domain}: report to {target} failed ({e}); next run")
    return ok, said


def inject_command(reporter: Reporter, address: str) -> list[str]:
    """qmail-inject's arguments: recipients from the arguments alone (``-a``: a header
    field can add none), and ``--`` before the address, so it is never read as an
    option whatever it starts with."""
    return [reporter.inject, "-a", "-f", reporter.contact, "--", address]


def _mail(report: Report, address: str, reporter: Reporter, timeout: float) -> None:
    boundary = "tlsrpt-" + os.urandom(8).hex()
    date = email.utils.formatdate(usegmt=True)
    data = message(report, reporter.org, reporter.contact, address, boundary, date)
    proc = subprocess.run(
        inject_command(reporter, address), input=data, capture_output=True, timeout=timeout
    )
    if proc.returncode != 0:
        why = proc.stderr.decode("utf-8", "replace").strip() or f"exit {proc.returncode}"
        raise OSError(f"qmail-inject: {shown(why, 200)}")


async def _post(report: Report, url: str, resolver: AsyncResolver, timeout: float) -> None:

    try:
        status, _, _ = await request(
            "POST",
            url,
            first_address(resolver),
            report.gzipped(),
            [("Content-Type", "application/tlsrpt+gzip")],
            timeout=timeout,
        )
    except HttpsError as e:
        raise OSError(str(e)) from None
    if not 200 <= status < 300:
        raise OSError(f"HTTP {status}")
