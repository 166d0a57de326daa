"""``qremote tlsrpt send``: the daily job that reports each complete UTC day (RFC 8460).

For every day before today (UTC, ``--now`` for tests) whose session lines have not been
reported: per policy domain, the ``rua`` of ``_smtp._tls.<domain>``; the report goes to
each ``mailto:`` through ``$QMAILHOME/bin/qmail-inject`` (so it leaves through qmail and
qremote, DKIM-signed by the reporting domain's key, RFC 8460 section 3) and to each
``https:`` by POST. A day's file is renamed ``<day>.reported`` once every domain in it
was reported (or has no ``rua``); a domain whose report could not be handed on is tried
again by the next run, up to a week, and never sent twice: the domains done are kept in
``<day>.done``.
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
from qremote.settings import report_contact
from qremote.tlsrpt.record import day_of, folder
from qremote.tlsrpt.report import Report, build, message, parse_rua

if TYPE_CHECKING:
    from dns.asyncresolver import Resolver as AsyncResolver

    from qremote.settings import Settings as RemoteSettings

GIVE_UP_DAYS = 7
"""A day whose reports could not all be handed on is dropped after this many days."""


@dataclass(frozen=True)
class Settings:
    org: str
    contact: str
    inject: str


def load(home: str) -> Settings:
    control = ControlDir(os.path.join(home, "control"))
    me = (control.line("me") or "localhost").strip()
    org = (control.line("tlsrptorg") or me).strip()
    return Settings(org, report_contact(control), os.path.join(home, "bin", "qmail-inject"))


def pending_days(home: str, now: float) -> list[str]:
    today = day_of(now)
    try:
        names = os.listdir(folder(home))
    except OSError:
        return []
    return sorted(n[:-4] for n in names if n.endswith(".log") and n[:-4] < today)


def run(home: str, now: float | None = None) -> list[str]:
    """One line per report handed on (or failure); reports every pending day."""
    moment = time.time() if now is None else now
    settings = load(home)
    said: list[str] = []
    from qremote.settings import load_settings

    resolver = _resolver(load_settings(home))
    for day in pending_days(home, moment):
        said.extend(asyncio.run(_day(home, day, settings, resolver, moment)))
    return said


def _resolver(settings: RemoteSettings) -> AsyncResolver:
    from qremote.routing.resolve import make_resolver

    return make_resolver(settings.nameservers, settings.timeout_connect, settings.timeout_remote)


async def _day(
    home: str, day: str, settings: Settings, resolver: AsyncResolver, now: float
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
        ok, lines = await _domain(day, domain, by_domain[domain], settings, resolver)
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
    day: str, domain: str, lines: list[dict], settings: Settings, resolver
) -> tuple[bool, list[str]]:
    from qremote.routing.dnserrors import DnsHard, DnsSoft
    from qremote.routing.resolve import query

    try:
        answer = await query(resolver, f"_smtp._tls.{domain}", "TXT")
    except DnsHard:
        return True, []
    except DnsSoft as e:
        return False, [f"{day} {domain}: cannot look up _smtp._tls.{domain} ({e}); next run"]
    rua = parse_rua([b"".join(r.strings) for r in answer])
    if not rua:
        return True, []
    report = build(day, domain, lines, settings.org, settings.contact)
    ok, said = True, []
    for uri in rua:
        try:
            if uri.startswith("mailto:"):
                _mail(report, uri, settings)
            else:
                await _post(report, uri, resolver)
            said.append(f"{day} {domain}: report {report.report_id} sent to {uri}")
        except OSError as e:
            ok = False
            said.append(f"{day} {domain}: report to {uri} failed ({e}); next run")
    return ok, said


def _mail(report: Report, uri: str, settings: Settings) -> None:
    to = uri[len("mailto:") :].split("?")[0]
    boundary = "tlsrpt-" + os.urandom(8).hex()
    date = email.utils.formatdate(usegmt=True)
    data = message(report, settings.org, settings.contact, to, boundary, date)
    proc = subprocess.run(
        [settings.inject, "-f", settings.contact, to],
        input=data,
        capture_output=True,
        timeout=300,
    )
    if proc.returncode != 0:
        why = proc.stderr.decode("utf-8", "replace").strip() or f"exit {proc.returncode}"
        raise OSError(f"qmail-inject: {why}")


async def _post(report: Report, uri: str, resolver: AsyncResolver) -> None:
    from qremote.mtasts.fetch import FetchError, request
    from qremote.routing.resolve import first_address

    try:
        status, _, _ = await request(
            "POST",
            uri,
            first_address(resolver),
            report.gzipped(),
            [("Content-Type", "application/tlsrpt+gzip")],
        )
    except FetchError as e:
        raise OSError(str(e)) from None
    if not 200 <= status < 300:
        raise OSError(f"HTTP {status}")
