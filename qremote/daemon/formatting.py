"""qremoted's words: its log lines and the parts of ``qremote status`` (pure)."""

from __future__ import annotations

from qremote.delivery.outcome import Outcome

_CONTROLS = {c: "?" for c in [*range(32), 127]}


def plain(text: str, limit: int = 300) -> str:
    """A value from a sender or a peer in a log line: control characters (CR, LF, NUL,
    escapes) become ``?``, as qmail's outsafe does, so no value can forge a line."""
    text = text[:limit]
    return text if text.isprintable() else text.translate(_CONTROLS)  # most are printable


def one_line(data: bytes, limit: int = 300) -> str:
    text = data.rstrip(b"\0\n").decode("utf-8", "replace")
    return plain(text.replace("\n", " / "), limit)


def delivery_line(
    pid: int, host: str, sender: str, out: Outcome, seconds: float, handed_back: bool
) -> str:
    """The one log line of a delivery: who, to where, each recipient's letter (counts when
    there are many), the message report on one line, and how long it took."""
    letters = out.letters
    if len(letters) > 10:  # keep the line short: counts instead
        letters = " ".join(f"{letters.count(c)}{c}" for c in "rhs" if c in letters)
    return (
        f"delivery pid {pid} to {plain(host)} from <{plain(sender)}> rcpt {letters or '-'}: "
        f"{one_line(out.message)} ({seconds:.2f}s)"
        + ("" if handed_back else "; the client had stopped waiting, qmail will retry")
    )


def abandoned_line(pid: int, host: str, sender: str, why: str, seconds: float) -> str:
    """A delivery stopped just before its final dot: nothing was sent, no report owed."""
    return (
        f"delivery pid {pid} to {plain(host)} from <{plain(sender)}>: abandoned before the "
        f"final dot, {why}; not sent, qmail will retry ({seconds:.2f}s)"
    )


def status_text(
    pid: int,
    up: float,
    done: int,
    jobs: list[tuple[int, str, str, int, float]],
    idle: list[str],
    tls: list[str] | None = None,
) -> str:
    """What ``qremote status`` shows of qremoted: in-flight deliveries (pid, host, sender,
    recipients, seconds so far) and the cached connections."""
    lines = [f"qremoted pid {pid}, up {up:.0f}s, {done} deliveries done, {len(jobs)} in flight"]
    for job_pid, host, sender, recipients, seconds in jobs:
        lines.append(
            f"  pid {job_pid} to {plain(host)} from <{plain(sender)}>, {recipients} recipients, "
            f"{seconds:.1f}s"
        )
    lines.append(f"cached connections: {len(idle)}")
    lines.extend(f"  {line}" for line in idle)
    if tls:
        lines.append("authenticated TLS per MX group:")
        lines.extend(f"  {line}" for line in tls)
    return "\n".join(lines) + "\n"
