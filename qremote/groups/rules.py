"""control/mxgroups: which group a destination belongs to, and its cap (pure functions).

One rule a line: ``name:limit:pattern[,pattern...]`` where a pattern is an MX host name,
a ``.suffix`` of MX host names, or ``@domain`` for a destination domain; and ``*:limit``
for every other destination. The first named rule that matches wins. A destination no
named rule matches forms a group of its own MX host names, so every domain hosted on the
same MX set shares one cap without anyone configuring it.

Without the file the default is :data:`DEFAULT_LIMIT` simultaneous deliveries per MX set:
the per-destination default of Postfix (``default_destination_concurrency_limit``), which
the large providers tolerate from one IP; a site sending more raises it deliberately.
Bad lines are reported (``qremote check``) and skipped; the rest still apply.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_LIMIT = 20

UNNAMED = "mx:"
"""The prefix of a group no named rule made: ``mx:`` and its MX host names."""


@dataclass(frozen=True)
class Rule:
    name: str
    limit: int
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class Rules:
    named: tuple[Rule, ...] = ()
    default_limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class Group:
    name: str
    limit: int


def parse(lines: list[str]) -> tuple[Rules, list[str]]:
    """The rules and one message per bad line (which is skipped)."""
    named: list[Rule] = []
    default = DEFAULT_LIMIT
    problems: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"control/mxgroups line {number}"
        parts = line.split(":")
        if parts[0] == "*":
            if len(parts) != 2 or not parts[1].strip().isdigit() or int(parts[1]) < 1:
                problems.append(f"{where}: {line!r} is not *:limit (a whole number above 0)")
                continue
            default = int(parts[1])
            continue
        if len(parts) != 3:
            problems.append(f"{where}: {line!r} is not name:limit:pattern[,pattern...]")
            continue
        name, limit, patterns = (p.strip() for p in parts)
        if not name or not limit.isdigit() or int(limit) < 1:
            problems.append(f"{where}: {line!r} needs a name and a whole-number limit above 0")
            continue
        pats = tuple(p.strip().lower().rstrip(".") for p in patterns.split(",") if p.strip())
        if not pats:
            problems.append(f"{where}: {line!r} has no pattern")
            continue
        named.append(Rule(name, int(limit), pats))
    return Rules(tuple(named), default), problems


def _matches(pattern: str, domain: str, mx_names: list[str]) -> bool:
    if pattern.startswith("@"):
        return domain == pattern[1:]
    if pattern.startswith("."):
        return any(n.endswith(pattern) for n in mx_names)
    return pattern in mx_names


def group_for(domain: str, mx_names: list[str], rules: Rules) -> Group:
    """The group of one delivery: a named rule, else the set of its MX host names."""
    domain = domain.lower().rstrip(".")
    names = sorted({n.lower().rstrip(".") for n in mx_names if n})
    for rule in rules.named:
        if any(_matches(p, domain, names) for p in rule.patterns):
            return Group(rule.name, rule.limit)
    return Group(UNNAMED + ",".join(names or [domain]), rules.default_limit)
