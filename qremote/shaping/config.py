"""control/shaping.toml: message rates and automation rules per destination, in KumoMTA's
shaping format as far as qremote applies it (pure: text in, rules and problems out).

An administrator can start from KumoMTA's published community file. The tables:

- ``["default"]``: what applies to every destination;
- ``["example.com"]``: one destination domain (its keys override the rest);
- ``[provider."google"]`` with ``match = [{MXSuffix = ".google.com"}, ...]``: every
  destination whose MX hosts the provider serves, whatever its domain; the provider's
  name is then the destination's group (its MX group and its shaping path alike);
- ``[source."192.0.2.10"]`` (qremote's own): one source address's ``max_message_rate``
  over every destination, and its ``warmup = {start = 2026-12-01, first = 1000,
  factor = 2, full = 200000}``.

Keys qremote applies: ``max_message_rate`` (``"N/s"``, ``"N/min"``, ``"N/h"``,
``"N/day"``), ``max_connection_rate`` (new connections, same form),
``max_deliveries_per_connection`` (messages one kept connection may carry),
``connection_limit`` (the MX-group cap: one notion with control/mxgroups), and
``[[... .automation]]`` entries with ``regex`` (one or a list), ``action``
(``"Suspend"``, ``{SetConfig = {name = "max_message_rate", value = ...}}``, or a list),
``duration`` and an optional ``trigger = {Threshold = "N/period"}``. Every other
key or action is named by :func:`parse` as a problem (``qremote check`` says it) and is
not applied: never silently ignored, never a reason to stop mail.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from qremote.groups.rules import Group
from qremote.limits import (
    SHAPING_FILE_BYTES,
    SHAPING_MATCH_CHARS,
    SHAPING_REGEX_CHARS,
    SHAPING_RULES,
    SHAPING_THRESHOLD_MAX,
)

PERIODS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip

APPLIED = frozenset({
    "max_message_rate", "max_connection_rate", "max_deliveries_per_connection",
    "connection_limit", "automation",
})  # fmt: skip
"""The path keys qremote applies (``match`` and ``automation`` have their own rules)."""

KNOWN_UNAPPLIED = frozenset({
    "enable_tls",
    "consecutive_connection_failures_before_delay", "idle_timeout", "connect_timeout",
    "mx_rollup", "max_ready", "smtp_port", "tls_prefer_openssl", "data_timeout",
    "data_dot_timeout", "ehlo_timeout", "banner_timeout", "rset_timeout",
    "mail_from_timeout", "rcpt_to_timeout", "enable_mta_sts", "enable_dane",
    "allow_smtp_auth_plain_without_tls", "replace_base", "prohibited_hosts",
    "skip_hosts", "ehlo_domain", "suspended", "source_selection_rate",
})  # fmt: skip
"""KumoMTA keys that are real but not (yet) qremote's: named as not applied."""


@dataclass(frozen=True)
class Rate:
    """``count`` messages per ``period`` seconds."""

    count: int
    period: int
    text: str

    @property
    def interval(self) -> float:
        """Seconds between two messages at this rate (GCRA's emission interval)."""
        return self.period / self.count


def parse_rate(value: object) -> Rate:
    """``"10/min"``, ``"2/s"``, ``"1000/day"``, ``"50/h"``; ValueError otherwise."""
    text = str(value).strip()
    match = re.fullmatch(r"(\d{1,9})\s*/\s*([a-z]+)", text.lower())
    if match is None or match.group(2) not in PERIODS or int(match.group(1)) < 1:
        raise ValueError(f"{text[:40]!r} is not a rate like 10/min (s, min, h, day)")
    return Rate(int(match.group(1)), PERIODS[match.group(2)], text)


def parse_duration(value: object) -> int:
    """Seconds: a whole number, or ``"30m"``, ``"2 hours"``, ``"1h"``, ``"90s"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d{1,9})\s*([a-z]*)", text)
    if match is None or (match.group(2) and match.group(2) not in PERIODS):
        raise ValueError(f"{text[:40]!r} is not a duration like 30m, 2h or 1 day")
    seconds = int(match.group(1)) * PERIODS.get(match.group(2) or "s", 1)
    if seconds < 1:
        raise ValueError(f"{text[:40]!r} is not a duration above zero")
    return seconds


@dataclass(frozen=True)
class Action:
    kind: str
    """``suspend`` or ``rate`` (SetConfig of max_message_rate)."""
    rate: Rate | None = None


@dataclass(frozen=True)
class Rule:
    """One automation entry: when a reply matches, act for ``duration`` seconds."""

    patterns: tuple[re.Pattern[str], ...]
    actions: tuple[Action, ...]
    duration: int
    threshold: tuple[int, int] | None = None
    """(matches, within seconds) before it acts; None: the first match acts."""

    def matches(self, text: str) -> bool:
        """Whether a pattern is found in the first SHAPING_MATCH_CHARS of ``text``."""
        head = text[:SHAPING_MATCH_CHARS]
        return any(p.search(head) for p in self.patterns)


@dataclass(frozen=True)
class PathConfig:
    """What applies to one destination."""

    max_message_rate: Rate | None = None
    connection_limit: int | None = None
    automation: tuple[Rule, ...] = ()
    max_connection_rate: Rate | None = None
    """New connections (a kept connection's next message is not one)."""
    max_deliveries_per_connection: int | None = None
    """Messages one connection carries before it is closed (with control/reusemessages,
    the smaller applies)."""


@dataclass(frozen=True)
class Provider:
    name: str
    suffixes: tuple[str, ...]
    """MXSuffix entries (``.google.com``), lowercase."""
    hosts: tuple[str, ...]
    """MXRollup / exact MX host entries, lowercase."""
    config: PathConfig

    def serves(self, mx_names: list[str]) -> bool:
        return any(n.endswith(self.suffixes) or n in self.hosts for n in mx_names)


DAY = 86400


@dataclass(frozen=True)
class Warmup:
    """A new address's daily allowance, growing day by day: ``first`` messages on its
    ``start`` day (UTC), ``factor`` times more each day after, until ``full``, from
    which day on it has no warm-up limit. The day's allowance is spread evenly over the
    day (a rate of N/day), as providers like a new address to send."""

    start_day: int
    """Days since 1970-01-01 (UTC) of the first day."""
    first: int
    factor: float
    full: int

    def cap(self, now: float) -> int | None:
        """Messages allowed on the UTC day of ``now``; None once warmed up."""
        day = max(0, int(now // DAY) - self.start_day)
        allowed = self.first * self.factor ** min(day, 400)
        return None if allowed >= self.full else int(allowed)


@dataclass(frozen=True)
class SourceConfig:
    max_message_rate: Rate | None = None
    warmup: Warmup | None = None

    def rate(self, now: float) -> Rate | None:
        """The slower of the address's rate and its warm-up allowance for today."""
        cap = self.warmup.cap(now) if self.warmup is not None else None
        daily = Rate(cap, DAY, f"{cap}/day (warm-up)") if cap else None
        rates = [r for r in (self.max_message_rate, daily) if r is not None]
        return min(rates, key=lambda r: r.count / r.period) if rates else None


@dataclass(frozen=True)
class Shaping:
    default: PathConfig = PathConfig()
    domains: dict[str, PathConfig] = field(default_factory=dict)
    providers: tuple[Provider, ...] = ()

    sources: dict[str, SourceConfig] = field(default_factory=dict)
    """``[source."192.0.2.10"]``: a source address's own rate and warm-up, by address."""


@dataclass(frozen=True)
class Path:
    """A delivery's shaping path: its group's name and what applies."""

    group: str
    config: PathConfig
    provider: bool
    """The group is a provider's (so the provider's connection_limit is its cap)."""


def path_for(shaping: Shaping, domain: str, mx_names: list[str], group: str) -> Path:
    """The provider serving these MX hosts (its name becomes the group), else the MX
    group; settings merged default, then provider, then domain (the most specific last)."""
    names = [n.lower().rstrip(".") for n in mx_names]
    config = shaping.default
    provider = next((p for p in shaping.providers if p.serves(names)), None)
    if provider is not None:
        config = _merge(config, provider.config)
        group = provider.name
    own = shaping.domains.get(domain.lower().rstrip("."))
    if own is not None:
        config = _merge(config, own)
    return Path(group, config, provider is not None)


def group(path: Path, mx_group: Group, named: bool, default_limit: int) -> Group:
    """The MX group a delivery's slot is taken in, with shaping's ``connection_limit``
    as one notion with control/mxgroups: a named mxgroups rule wins (it was written for
    this); else a provider is a group of its own, capped by its connection_limit (or
    mxgroups' default); else the MX group, capped by a domain's or the default table's
    connection_limit when one is set."""
    if named:
        return mx_group
    limit = path.config.connection_limit
    if path.provider:
        return Group(path.group, limit or default_limit)
    return Group(mx_group.name, limit) if limit else mx_group


def _merge(base: PathConfig, over: PathConfig) -> PathConfig:
    return PathConfig(
        over.max_message_rate or base.max_message_rate,
        over.connection_limit or base.connection_limit,
        base.automation + over.automation,
        over.max_connection_rate or base.max_connection_rate,
        over.max_deliveries_per_connection or base.max_deliveries_per_connection,
    )


def parse(data: dict[str, Any]) -> tuple[Shaping, list[str]]:
    """The shaping and one problem text per key, value or action not applied."""
    problems: list[str] = []
    default = PathConfig()
    domains: dict[str, PathConfig] = {}
    providers: list[Provider] = []
    sources: dict[str, SourceConfig] = {}
    rules = [0]
    for name, table in data.items():
        if name == "source":
            if not isinstance(table, dict):
                problems.append("source: not a table of source addresses")
                continue
            for address, stable in table.items():
                parsed = _source(str(address), stable, problems)
                if parsed is not None:
                    sources[parsed[0]] = parsed[1]
            continue
        if name == "provider":
            if not isinstance(table, dict):
                problems.append("provider: not a table of providers")
                continue
            for pname, ptable in table.items():
                where = f'[provider."{pname}"]'
                if not isinstance(ptable, dict):
                    problems.append(f"{where}: not a table")
                    continue
                suffixes, hosts = _match(ptable.get("match"), where, problems)
                rest = {k: v for k, v in ptable.items() if k != "match"}
                config = _path(rest, where, problems, rules)
                if not suffixes and not hosts:
                    problems.append(f"{where}: no match = [{{MXSuffix = ...}}]: matches nothing")
                    continue
                providers.append(Provider(str(pname), suffixes, hosts, config))
            continue
        where = f'["{name}"]'
        if not isinstance(table, dict):
            problems.append(f"{where}: not a table")
            continue
        config = _path(table, where, problems, rules)
        if name == "default":
            default = config
        else:
            domains[str(name).lower().rstrip(".")] = config
    return Shaping(default, domains, tuple(providers), sources), problems


def _source(
    address: str, table: object, problems: list[str]
) -> tuple[str, SourceConfig] | None:
    where = f'[source."{address}"]'
    try:
        ip = str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        problems.append(f"{where}: not an IP address; not applied")
        return None
    if not isinstance(table, dict):
        problems.append(f"{where}: not a table")
        return None
    config = SourceConfig()
    for key, value in table.items():
        try:
            if key == "max_message_rate":
                config = replace(config, max_message_rate=parse_rate(value))
            elif key == "warmup":
                config = replace(config, warmup=_warmup(value))
            else:
                problems.append(f"{where}: {key} is not a source key qremote knows")
        except ValueError as e:
            problems.append(f"{where}: {key}: {e}; not applied")
    return ip, config


def _warmup(value: object) -> Warmup:
    """``{start = 2026-12-01, first = 1000, factor = 2, full = 200000}``."""
    if not isinstance(value, dict):
        raise ValueError("not a table like {start = 2026-12-01, first = 1000, full = 200000}")
    unknown = set(value) - {"start", "first", "factor", "full"}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]} is not a warm-up key (start, first, factor, full)")
    start = value.get("start")
    if isinstance(start, str):
        text = start
        try:
            start = datetime.date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"start {text[:20]!r} is not a date like 2026-12-01") from None
    if not isinstance(start, datetime.date) or isinstance(start, datetime.datetime):
        raise ValueError("start is not a date like 2026-12-01")
    first, full = value.get("first"), value.get("full")
    factor = value.get("factor", 2)
    if not isinstance(first, int) or isinstance(first, bool) or first < 1:
        raise ValueError("first is not a whole number of messages above 0")
    if not isinstance(full, int) or isinstance(full, bool) or full <= first:
        raise ValueError("full is not a whole number of messages above first")
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 1 < factor <= 10:
        raise ValueError("factor is not a number above 1 (at most 10)")
    day = (start - datetime.date(1970, 1, 1)).days
    return Warmup(day, first, float(factor), full)


def _match(
    value: object, where: str, problems: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    suffixes: list[str] = []
    hosts: list[str] = []
    for entry in value if isinstance(value, list) else []:
        if isinstance(entry, dict) and "MXSuffix" in entry:
            suffixes.append(str(entry["MXSuffix"]).lower().rstrip("."))
        elif isinstance(entry, dict) and "MXRollup" in entry:
            hosts.append(str(entry["MXRollup"]).lower().rstrip("."))
        elif isinstance(entry, dict) and "HostName" in entry:
            hosts.append(str(entry["HostName"]).lower().rstrip("."))
        else:
            problems.append(
                f"{where}: match entry {str(entry)[:60]} is not MXSuffix, MXRollup or HostName"
            )
    return tuple(suffixes), tuple(hosts)


def _path(table: dict[str, Any], where: str, problems: list[str], rules: list[int]) -> PathConfig:
    config = PathConfig()
    for key, value in table.items():
        try:
            if key == "max_message_rate":
                config = replace(config, max_message_rate=parse_rate(value))
            elif key == "max_connection_rate":
                config = replace(config, max_connection_rate=parse_rate(value))
            elif key == "connection_limit":
                config = replace(config, connection_limit=_count(value))
            elif key == "max_deliveries_per_connection":
                config = replace(config, max_deliveries_per_connection=_count(value))
            elif key == "automation":
                entries = value if isinstance(value, list) else [value]
                made = []
                for n, entry in enumerate(entries, start=1):
                    rule = _rule(entry, f"{where} automation {n}", problems)
                    if rule is not None:
                        rules[0] += 1
                        if rules[0] > SHAPING_RULES:
                            problems.append(
                                f"{where}: more than {SHAPING_RULES} automation rules: "
                                "the rest are not applied"
                            )
                            break
                        made.append(rule)
                config = replace(config, automation=config.automation + tuple(made))
            elif key in KNOWN_UNAPPLIED:
                problems.append(f"{where}: {key} is not applied by qremote (yet)")
            else:
                problems.append(f"{where}: {key} is not a shaping key qremote knows")
        except ValueError as e:
            problems.append(f"{where}: {key}: {e}; not applied")
    return config


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{str(value)[:40]!r} is not a whole number above 0")
    return value


def _rule(entry: object, where: str, problems: list[str]) -> Rule | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: not a table; not applied")
        return None
    unknown = set(entry) - {"regex", "action", "duration", "trigger"}
    for key in sorted(unknown):
        problems.append(f"{where}: {key} is not an automation key qremote knows")
    try:
        raw = entry.get("regex")
        listed = raw if isinstance(raw, list) else [raw]
        texts = [t for t in listed if isinstance(t, str) and t]
        if not texts or len(texts) != len(listed):
            raise ValueError("regex must be a pattern or a list of them")
        if any(len(t) > SHAPING_REGEX_CHARS for t in texts):
            raise ValueError(f"a regex longer than {SHAPING_REGEX_CHARS} characters")
        try:
            patterns = tuple(re.compile(t) for t in texts)
        except re.error as e:
            raise ValueError(f"regex: {e}") from None
        actions = _actions(entry.get("action"), where, problems)
        if not actions:
            raise ValueError("no action qremote applies")
        if "duration" not in entry:
            raise ValueError("no duration")
        duration = parse_duration(entry["duration"])
        threshold = None
        trigger = entry.get("trigger")
        if trigger is not None:
            if not isinstance(trigger, dict) or set(trigger) != {"Threshold"}:
                raise ValueError('trigger is not {Threshold = "N/period"}')
            rate = parse_rate(trigger["Threshold"])
            if rate.count > SHAPING_THRESHOLD_MAX:
                raise ValueError(f"a threshold above {SHAPING_THRESHOLD_MAX} matches")
            threshold = (rate.count, rate.period)
    except ValueError as e:
        problems.append(f"{where}: {e}; not applied")
        return None
    return Rule(patterns, actions, duration, threshold)


def _actions(value: object, where: str, problems: list[str]) -> tuple[Action, ...]:
    out = []
    for action in value if isinstance(value, list) else [value]:
        if action == "Suspend":
            out.append(Action("suspend"))
            continue
        if isinstance(action, dict) and set(action) == {"SetConfig"}:
            setting = action["SetConfig"]
            if isinstance(setting, dict) and setting.get("name") == "max_message_rate":
                try:
                    out.append(Action("rate", parse_rate(setting.get("value"))))
                except ValueError as e:
                    problems.append(f"{where}: SetConfig: {e}; not applied")
                continue
            name = setting.get("name") if isinstance(setting, dict) else setting
            problems.append(f"{where}: SetConfig of {str(name)[:40]} is not applied by qremote")
            continue
        problems.append(f"{where}: action {str(action)[:60]} is not applied by qremote")
    return tuple(out)


@dataclass(frozen=True)
class Loaded:
    """control/shaping.toml as a delivery uses it: a file that cannot be read gives no
    shaping at all (and says so), never deferred mail."""

    shaping: Shaping = Shaping()
    problems: tuple[str, ...] = ()
    """Keys, values and actions not applied (``qremote check`` names them)."""
    error: str | None = None
    """Why the file was not read at all."""


FILE = "shaping.toml"

DEFAULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "defaults.toml")
"""qremote's automation rules for Gmail, Yahoo/AOL, Outlook/Hotmail and Apple."""


def defaults_text() -> str:
    with open(DEFAULTS, encoding="utf-8") as f:
        return f.read()


def load(control_path: str) -> Loaded:
    """Read control/shaping.toml (missing: no shaping)."""
    import tomllib  # start-up: only a site with the file pays for the TOML parser

    path = os.path.join(control_path, FILE)
    try:
        with open(path, "rb") as f:
            data = f.read(SHAPING_FILE_BYTES + 1)
    except FileNotFoundError:
        return Loaded()
    except OSError as e:
        return Loaded(error=f"control/{FILE}: {e.strerror}")
    if len(data) > SHAPING_FILE_BYTES:
        return Loaded(error=f"control/{FILE}: longer than {SHAPING_FILE_BYTES} bytes")
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        return Loaded(error=f"control/{FILE}: {e}")
    shaping, problems = parse(table)
    return Loaded(shaping, tuple(f"control/{FILE}: {p}" for p in problems))
