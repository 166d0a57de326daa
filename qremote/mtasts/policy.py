"""The MTA-STS TXT record and policy file, parsed strictly (RFC 8461 sections 3.1, 3.2).

Case: RFC 8461 writes its literals with RFC 7405's ``%s`` ("case-sensitive string"):
``v=STSv1``, ``id=``, ``version``, ``STSv1``, ``mode``, ``enforce``/``testing``/``none``,
``max_age``, ``mx``. So ``mode: ENFORCE`` is not a policy, and is refused with a reason
that says so (a receiving domain reading its TLS reports learns what to fix); accepting
it would guess at what a malformed policy meant. Host names in ``mx`` compare without
regard to case, as DNS names do.

Pure functions: what the DNS and the HTTPS server said, in; a policy or the reason it is
unusable, out. The reasons are worded for reports and name RFC 8460's result types where
they are counted (``sts-policy-invalid``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_AGE_LIMIT = 31557600
"""RFC 8461 section 3.2: max_age is at most a year."""

_ID = re.compile(r"[A-Za-z0-9]{1,32}")


class StsError(ValueError):
    """A record or policy that cannot be used; the text says why."""


@dataclass(frozen=True)
class StsPolicy:
    mode: str
    """enforce, testing or none."""
    mx: tuple[str, ...]
    max_age: int
    text: str
    """The policy as fetched (its lines go into TLS reports as the policy string)."""

    def allows(self, mx_host: str) -> bool:
        """Does an ``mx`` pattern cover this host? ``*.example.net`` covers exactly one
        label in its place (RFC 8461 section 4.1); names compare case-insensitively."""
        host = mx_host.rstrip(".").lower()
        for pattern in self.mx:
            if pattern.startswith("*."):
                first, dot, rest = host.partition(".")
                if dot and first and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False

    def lines(self) -> list[str]:
        return [line.rstrip("\r") for line in self.text.split("\n") if line.strip()]


def parse_txt(records: list[bytes]) -> str:
    """The policy id of ``_mta-sts.<domain>``: exactly one record starting ``v=STSv1``
    (others are discarded), with an ``id`` of 1 to 32 letters and digits."""
    ours = [r for r in records if r.startswith(b"v=STSv1;") or r == b"v=STSv1"]
    if not ours:
        raise StsError("no v=STSv1 TXT record")
    if len(ours) > 1:
        raise StsError("more than one v=STSv1 TXT record")
    text = ours[0].decode("ascii", "replace")
    fields: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name not in fields:
            fields[name] = value.strip()
    policy_id = fields.get("id", "")
    if not _ID.fullmatch(policy_id):
        raise StsError("the v=STSv1 TXT record has no valid id")
    return policy_id


def parse_policy(text: str) -> StsPolicy:
    """``key: value`` lines (LF or CRLF); version STSv1, mode, max_age, and mx lines
    (at least one unless the mode is none). Unknown keys are ignored; a known key given
    twice keeps its first value (mx may repeat)."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for raw in text.split("\n"):
        line = raw.rstrip("\r").strip(" \t")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise StsError("sts-policy-invalid: a line without ':'")
        name, value = name.strip(), value.strip(" \t")
        if name == "mx":
            if not re.fullmatch(r"(\*\.)?[A-Za-z0-9_.-]+", value) or ".." in value:
                raise StsError("sts-policy-invalid: an mx pattern is not a host name")
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(name, value)
    if fields.get("version") != "STSv1":
        raise StsError("sts-policy-invalid: version is not STSv1")
    mode = fields.get("mode")
    if mode not in ("enforce", "testing", "none"):
        if mode is not None and mode.lower() in ("enforce", "testing", "none"):
            raise StsError(
                "sts-policy-invalid: mode must be written in lower case (RFC 8461's %s)"
            )
        raise StsError("sts-policy-invalid: mode is not enforce, testing or none")
    age = fields.get("max_age", "")
    if not age.isdigit() or len(age) > 10 or int(age) > MAX_AGE_LIMIT:
        raise StsError(f"sts-policy-invalid: max_age is not a number from 0 to {MAX_AGE_LIMIT}")
    if not mx and mode != "none":
        raise StsError("sts-policy-invalid: no mx line")
    return StsPolicy(mode, tuple(dict.fromkeys(mx)), int(age), text)
