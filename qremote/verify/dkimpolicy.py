"""What to do with mail whose signatures fail, for domains the administrator lists.

``control/dkimverifypolicy``, one rule a line: ``domain:reject`` or ``domain:defer``. A rule
applies to a message whose From: domain is that domain or one of its subdomains; it acts
when no DKIM signature with ``d=`` that domain (or a parent of the From: domain within
it) passes. A temporary error in verification never rejects: it defers at most. Without
the file nothing is ever refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from qremote.control import ControlError
from qremote.verify.results import Result

ACTIONS = ("reject", "defer")


@dataclass(frozen=True)
class Verdict:
    action: str
    """``reject`` (permanent) or ``defer`` (temporary)."""
    text: str


def parse(lines: list[str]) -> dict[str, str]:
    rules: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line or line.startswith("#"):
            continue
        domain, sep, action = line.partition(":")
        action = action.strip().lower()
        if not sep or action not in ACTIONS or not domain.strip():
            raise ControlError(
                f"control/dkimverifypolicy line {number}: {line!r} is not domain:reject|defer"
            )
        rules[domain.strip().lower().rstrip(".")] = action
    return rules


def verdict_for(
    rules: dict[str, str], from_domain: str | None, results: list[Result]
) -> Verdict | None:
    if not rules or not from_domain:
        return None
    labels = from_domain.split(".")
    rule_domain = next(
        (".".join(labels[i:]) for i in range(len(labels)) if ".".join(labels[i:]) in rules), None
    )
    if rule_domain is None:
        return None
    action = rules[rule_domain]
    relevant = [
        r
        for r in results
        if r.method == "dkim"
        and (
            r.props.get("header.d", "").lower() == rule_domain
            or from_domain.endswith("." + r.props.get("header.d", "").lower())
            and r.props.get("header.d", "").lower().endswith(rule_domain)
        )
    ]
    if any(r.result == "pass" for r in relevant):
        return None
    if any(r.result == "temperror" for r in relevant):
        action = "defer"
    text = f"no valid DKIM signature of {rule_domain} on mail from {from_domain}"
    return Verdict(action, text)
