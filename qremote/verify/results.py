"""Verification results and the Authentication-Results header (RFC 8601)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Result:
    method: str
    """``dkim``, ``domainkeys`` or ``arc``."""
    result: str
    """pass, fail, neutral, temperror, permerror, none."""
    reason: str = ""
    props: dict[str, str] = field(default_factory=dict)
    """header.d, header.i, header.s, header.a, header.from ..."""

    def text(self) -> str:
        out = f"{self.method}={self.result}"
        if self.reason:
            out += f" ({comment(self.reason)})"
        for key, value in self.props.items():
            if value:
                out += f" {key}={_value(value)}"
        return out


TIME_SPENT = "not evaluated: the time for verifying this message, dkimverifytimeout, ran out"
"""The reason for a signature left unchecked once the message's time budget is spent."""


def past_the_count(limit: int) -> str:
    """The reason for a signature past the number a message may have checked."""
    return f"not evaluated: only the first {limit} signatures are"


def comment(text: str) -> str:
    # No ';' either: legal inside a comment, but naive A-R readers split on it.
    return "".join(c if 32 <= ord(c) < 127 and c not in "();\\" else " " for c in text)[:200]


def _value(text: str) -> str:
    """A ptype value: a token, or a quoted string when it holds specials."""
    if text and all(c.isalnum() or c in "-._@+=/" for c in text):
        return text
    return '"' + "".join(c for c in text if 32 <= ord(c) < 127 and c not in '"\\') + '"'


def shown(results: list[Result]) -> list[Result]:
    """The results the field states: ``dkim=none`` first when no signature (DKIM or
    DomainKeys) had anything to say, whatever ARC said."""
    if any(r.method in ("dkim", "domainkeys") for r in results):
        return results
    return [Result("dkim", "none"), *results]


def header(authserv_id: str, results: list[Result]) -> bytes:
    """One Authentication-Results field, folded one result a line, LF line ends."""
    results = shown(results)
    lines = [f"Authentication-Results: {authserv_id}"]
    lines += [r.text() for r in results]
    return (";\n\t".join(lines) + "\n").encode("ascii", "replace")
