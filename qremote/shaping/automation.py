"""What a provider's reply sets off (pure): the automation rules of a path matched
against the words of a failed delivery, with their thresholds counted over time.

A rule without a trigger acts on its first match; ``trigger = {Threshold = "3/h"}`` acts
when the third match falls within an hour of the first counted. Acting means: suspend
the path for the rule's duration (every delivery on it answers ``Z`` at once, without
connecting), and/or lower its rate for that duration (then back in steps:
:mod:`.rates`). The matches are kept per rule, at most as many as its threshold needs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from qremote.shaping.config import Rate, Rule


def rule_key(rule: Rule) -> str:
    """A rule's name in the stored match history: its patterns, hashed."""
    text = "\n".join(p.pattern for p in rule.patterns)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Effect:
    """What the matching rules decided: a suspension and/or a lowered rate, each for
    its duration from now."""

    suspend_for: int = 0
    rate: Rate | None = None
    rate_for: int = 0
    text: str = ""


def react(
    rules: tuple[Rule, ...], text: str, now: float, history: dict[str, list[float]]
) -> tuple[Effect | None, dict[str, list[float]]]:
    """The effect of ``text`` (a failed delivery's words), and the new match history."""
    history = {k: list(v) for k, v in history.items()}
    effect: Effect | None = None
    for rule in rules:
        if not rule.matches(text):
            continue
        if rule.threshold is not None:
            count, within = rule.threshold
            key = rule_key(rule)
            seen = [t for t in history.get(key, []) if now - t < within] + [now]
            if len(seen) < count:
                history[key] = seen[-count:]
                continue
            history.pop(key, None)  # acted: counting starts again
        effect = _add(effect or Effect(text=text[:300]), rule)
    return effect, history


def _add(effect: Effect, rule: Rule) -> Effect:
    suspend, rate, rate_for = effect.suspend_for, effect.rate, effect.rate_for
    for action in rule.actions:
        if action.kind == "suspend":
            suspend = max(suspend, rule.duration)
        elif action.rate is not None:
            slower = (
                rate is None or action.rate.count / action.rate.period < rate.count / rate.period
            )
            if slower:
                rate = action.rate
            rate_for = max(rate_for, rule.duration)
    return Effect(suspend, rate, rate_for, effect.text)
