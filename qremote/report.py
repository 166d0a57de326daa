"""qmail-remote's report format and its fixed texts.

qmail-rspawn reads what qmail-remote writes as a series of reports, each a letter, text,
and a NUL. qmail-send copies the text into its log, so the wording here is qmail's own,
byte for byte (see qmail-remote.c); only texts for situations qmail never had are new.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qremote.smtp.addresses import Fault

REMOTE_SAID = b"Remote host said: "
"""What precedes the server's own words in a report (qmail's)."""
USAGE = b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n"
NOCONN = b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
READ_ERROR = b"ZUnable to read message. (#4.3.0)\n"
CHDIR = b"ZUnable to switch to home directory. (#4.3.0)\n"
CONTROL = b"ZUnable to read control files. (#4.3.0)\n"
TEMP_DNS = b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n"
NOMX = b"DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n"
PARTIAL_LINE = b"DSMTP cannot transfer messages with partial final lines. (#5.6.2)\n"
STOPPED = (
    b"Zqremoted was stopped during the delivery; the message may or may not have been "
    b"sent, qmail will try again. (#4.3.0)\n"
)
"""qremoted's SIGTERM grace ran out mid-delivery: only a retry is safe. (The thin
clients' own "stopped answering" text stays in client.py and thinclient.c: the thin
path loads nothing it can do without.)"""
AMBIGUOUS_MX = (
    b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n"
    b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n"
)


def safe_name(name: bytes) -> bytes:
    """qmail's outsafe(): bytes outside printable ASCII become '?'."""
    return bytes(c if 33 <= c <= 126 else 63 for c in name)


def perm_dns(host: bytes) -> bytes:
    return b"DSorry, I couldn't find any host named " + safe_name(host) + b". (#5.1.2)\n"


def null_mx(host: bytes) -> bytes:
    """RFC 7505: the domain publishes a null MX, so it accepts no mail at all."""
    return b"DSorry, " + safe_name(host) + b" does not accept mail (null MX). (#5.1.10)\n"


def internal_error(reason: str) -> bytes:
    """Any unexpected local failure: always temporary, so qmail retries and nothing is lost."""
    text = reason.replace("\0", "?").replace("\n", " ").strip() or "unknown error"
    return b"ZInternal error in qmail-remote: " + text.encode("utf-8", "replace") + b". (#4.3.0)\n"


def control_error(detail: str) -> bytes:
    """qmail's control-file text, then one line naming the file or value at fault."""
    return CONTROL + detail.encode("utf-8", "replace") + b"\n"


def remote_said(text: bytes) -> bytes:
    """qmail's outsmtptext(): the server's own words, NULs shown as '?'."""
    if not text:
        return b""
    return REMOTE_SAID + text.replace(b"\0", b"?")


def quit_report(letter: str, prefix: str, partner: str, append: str, text: bytes) -> bytes:
    """qmail's quit(): letter+prefix, the peer address, append, '.', then the server text."""
    head = f"{letter}{prefix}{partner}{append}.\n".encode()
    return head + remote_said(text)


def recipient_report(letter: str, partner: str, text: bytes) -> bytes:
    """``r`` carries no text; ``h`` and ``s`` name the host and quote it, as qmail does."""
    if letter == "r":
        return b"r"
    return f"{letter}{partner} does not like recipient.\n".encode() + remote_said(text)


def dropped(partner: str, critical: bool) -> bytes:
    """The connection died or timed out mid-conversation (qmail's dropped())."""
    dup = "Possible duplicate! " if critical else ""
    return f"ZConnected to {partner} but connection died. {dup}(#4.4.2)\n".encode()


def protocol_violation(partner: str, what: str, critical: bool) -> bytes:
    """The server broke SMTP in a way that makes its later words worthless (a reply sent
    before it was asked for, a reply without end): temporary, like a dropped connection,
    since nothing says the recipient refused the mail."""
    dup = "Possible duplicate! " if critical else ""
    return f"ZConnected to {partner} but {what}. {dup}(#4.5.0)\n".encode()


def tls_failed(partner: str, why: str) -> bytes:
    """Required TLS could not be had with this host: retry later, never plain text."""
    return f"ZConnected to {partner} but TLS failed: {why}. (#4.7.0)\n".encode()


def dane_unusable(name: str, partner: str, why: str) -> bytes:
    """DANE says this MX host needs authenticated TLS, and what that takes cannot be had
    now (its TLSA lookup failed): the host is not tried, never tried without TLS."""
    return f"ZNot trying {name} ({partner}): {why}; DANE requires it. (#4.7.5)\n".encode(
        "utf-8", "replace"
    )


def sts_no_mx(domain: str, policy_id: str, names: list[str]) -> bytes:
    """MTA-STS enforce, and no MX host of the domain is one its policy names."""
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return (
        f"ZNo MX host of {domain} ({shown}) matches its MTA-STS policy (enforce, id "
        f"{policy_id}); none was tried. (#4.7.5)\n"
    ).encode("utf-8", "replace")


def tls_not_negotiated(partner: str) -> bytes:
    """Required TLS, and the server did not offer STARTTLS."""
    text = f"ZConnected to {partner} but TLS is required and was not negotiated. (#4.7.0)\n"
    return text.encode()


def auth_identity(user: bytes, mechanism: str) -> str:
    """``user (MECH)`` as reports show who we authenticated as: the user as qmail shows
    names (outsafe), never the password."""
    return f"{safe_name(user).decode('ascii')} ({mechanism})"


def auth_unusable(partner: str, offered: tuple[str, ...], wanted: str | None, where: str) -> bytes:
    """The relay offers no SASL mechanism we may use: our configuration or theirs."""
    if not offered:
        why = "it does not offer AUTH"
    elif wanted is not None:
        why = f"it does not offer {wanted}, which control/smtpauth names"
    else:
        shown = " ".join(safe_name(m.encode("ascii", "replace")).decode() for m in offered[:10])
        why = f"it offers no AUTH mechanism I speak (it offers {shown})"
    return f"ZConnected to {partner} but {why}; credentials from {where}. (#4.7.0)\n".encode()


def auth_failed(partner: str, who: str, why: str, text: bytes) -> bytes:
    """AUTH was refused or could not be completed: a configuration problem on one side or
    the other, never a reason to bounce the message (qmail retries)."""
    shown = "".join(c if c.isprintable() else "?" for c in why)
    because = f": {shown}" if shown else ""
    head = f"ZConnected to {partner} but authentication as {who} failed{because}. (#4.7.0)\n"
    return head.encode("utf-8", "replace") + remote_said(text)


def auth_required(partner: str, where: str, text: bytes) -> bytes:
    """530 to MAIL from a relay we have no credentials for: the route needs some."""
    head = (
        f"ZConnected to {partner} but it requires authentication, and {where} has no "
        "credentials (see control/smtpauth). (#4.7.0)\n"
    )
    return head.encode("utf-8", "replace") + remote_said(text)


def probe_done(partner: str) -> bytes:
    """``qremote check --route``: the connection got as far as MAIL, which it never sends."""
    return f"KConnected to {partner}; ready for MAIL, which was not sent (a check).\n".encode()


def utf8_refused(partner: str, why: str) -> bytes:
    """RFC 6531: this server did not offer SMTPUTF8, and the message cannot be sent
    without it; permanent (another MX may offer it: ``D`` only if none does)."""
    return (
        f"DConnected to {partner} but it does not support SMTPUTF8, and {why}. (#5.6.7)\n"
    ).encode()


def recipient_utf8(partner: str) -> bytes:
    """A recipient whose local part is not ASCII, to a server without SMTPUTF8."""
    return (
        f"h{partner} does not support SMTPUTF8, and the recipient's address is not "
        "ASCII. (#5.6.7)\n"
    ).encode()


def bad_sender(fault: Fault) -> bytes:
    """The envelope sender can never be sent (qremote.smtp.addresses): no server is asked.
    The address itself is not repeated: it may hold the very bytes at fault."""
    status = "5.1.7" if fault.status == "5.1.3" else fault.status
    return f"DThe sender's address {fault.why}: no server can be given it. (#{status})\n".encode()


def bad_recipient(fault: Fault) -> bytes:
    """A recipient that can never be sent, whatever the server offers."""
    return (
        f"hThe recipient's address {fault.why}: no server can be given it. (#{fault.status})\n"
    ).encode()


NO_SENDABLE_RECIPIENT = b"DNo recipient's address can be sent; nothing was sent.\n"


def no_recipient_accepted(partner: str) -> bytes:
    """qmail's text when every recipient was refused (the recipient reports say why)."""
    return f"DGiving up on {partner}.\n".encode()


# -- the extra lines of a report (after the server's words), for the qmail-send log ---------


def note_tls_not_tried(why: str) -> str:
    return f"TLS not tried: {why}"


def note_tls_retried(partner: str, why: str) -> str:
    return f"TLS to {partner} failed ({why}); retried without TLS"


def note_authenticated(who: str, tls_version: str) -> str:
    return f"Authenticated as {who} over {tls_version}."


def note_sts(mode: str, policy_id: str) -> str:
    return f"MTA-STS {mode} (policy id {policy_id})"


def note_sts_testing_failed(why: str) -> str:
    return f"MTA-STS testing: TLS would have failed ({why}); sent with TLS unverified"


NOTE_8BIT = (
    "Sent an 8-bit body to a server that did not offer 8BITMIME, as qmail does: "
    "re-encoding it would break its signatures."
)


NOTE_RAW_HEADERS = (
    "Sent header fields that are not ASCII to a server that did not offer SMTPUTF8, "
    "as qmail does."
)


def note_reused(partner: str, message: int) -> str:
    return f"Reused the connection to {partner} (message {message} on it)."


def note_no_family(host: str, source: str, where: str) -> str:
    return f"No address of {host} is of the family of {source} ({where})."


def note_signed(done: list[str]) -> str:
    """What was signed: the signatures made (:func:`signed_dkim`, ...), one note."""
    return "Signed: " + "; ".join(done) + "."


def signed_dkim(domain: str, selector: str, algorithm: str) -> str:
    return f"DKIM d={domain} s={selector} {algorithm}"


def signed_domainkeys(domain: str, selector: str) -> str:
    return f"DomainKeys d={domain} s={selector} rsa-sha1"


def sealed_arc(instance: int, cv: str, domain: str, selector: str) -> str:
    """A forwarded message's ARC set (RFC 8617), for the signing note."""
    return f"ARC i={instance} cv={cv} d={domain} s={selector}"


def not_sealed(why: str) -> str:
    """A forwarded message of an arcsign domain that got no ARC set: why."""
    return f"not ARC-sealed: {why}"


NOT_DK_IDN = (
    "no DomainKeys: its identity is an IDN, which DomainKeys verifiers cannot match to "
    "the A-label d= (Mail::DKIM: bad identity)"
)


def note_no_key(who: str | None) -> str:
    return f"Not signed: no key for {who or 'this message'} in control/domainkeys."


def note_sent_unsigned(why: str) -> str:
    """control/unsignable send: a key applies, and the message cannot be signed."""
    return f"Not signed: the message cannot be signed ({why}); sent unsigned."


def note_shared_unusable(url: str, why: str) -> str:
    return f"Shared state {url} unusable ({why}); local MX-group caps used."


def note_shared_unreachable(url: str, error: str) -> str:
    return f"Shared state {url} unreachable ({error}); local MX-group caps used."


def note_shaping_local(url: str, error: str) -> str:
    return f"Shared state {url} unreachable ({error}); this host's own shaping used."


def note_caps_off(why: str, root: str) -> str:
    return f"MX-group caps off: {why} in {root}."


def note_tcpto_unavailable(error: str) -> str:
    return f"Shared tcpto unavailable ({error})."


def cannot_run(program: str, why: str) -> bytes:
    """A program qremote hands the delivery to (sign-only mode's qmail-remote.orig)
    could not be started: temporary, the administrator can fix it."""
    return f"Zcannot run {program}: {why}. (#4.3.0)\n".encode("utf-8", "replace")


def sign_error(reason: str) -> bytes:
    """Signing was required and failed: retry later rather than send unsigned."""
    text = reason.replace("\0", "?").replace("\n", " ").strip()
    return b"ZUnable to sign message: " + text.encode("utf-8", "replace") + b" (#4.3.0)\n"


def unsignable(reason: str) -> bytes:
    """A key applies, the message can never be signed, and control/unsignable says bounce."""
    text = reason.replace("\0", "?").replace("\n", " ").strip()
    return (
        b"DThis message cannot be signed (" + text.encode("utf-8", "replace") + b"), and "
        b"control/unsignable says not to send it unsigned. (#5.6.0)\n"
    )


def one_line(text: str, limit: int = 200) -> str:
    """A provider's words inside our report: one line, printable, bounded."""
    return "".join(c if 32 <= ord(c) < 127 else " " for c in text).strip()[:limit]


def _limit_reached(limit: str, then: str, free_in: float) -> bytes:
    """A shaping rate whose next turn is further than control/shapingwait: ``Z`` at
    once, saying which limit and when it frees."""
    seconds = max(1, int(free_in + 0.999))
    return (
        f"Z{limit} reached (control/shaping.toml); the next {then} in {seconds} s, and "
        "qmail will retry. (#4.4.5)\n"
    ).encode("utf-8", "replace")


def rate_limited(group: str, source: str, rate: str, free_in: float) -> bytes:
    """The path's rate does not allow a message soon; nothing was connected to."""
    limit = f"Rate limit of {rate} for the {group} group from {source}"
    return _limit_reached(limit, "message may go", free_in)


def connection_rate_limited(group: str, source: str, rate: str, free_in: float) -> bytes:
    """The path's max_connection_rate does not allow a new connection soon; nothing was
    sent."""
    limit = f"Connection rate limit of {rate} for the {group} group from {source}"
    return _limit_reached(limit, "connection may open", free_in)


def source_limited(address: str, rate: str, free_in: float) -> bytes:
    """A source address's own rate (or its warm-up allowance) does not allow a message
    soon, nor does any further address."""
    limit = f"Rate limit of {rate} for source address {address}"
    return _limit_reached(limit, "message may go", free_in)


def note_overflow(bound: str, used: str, group: str) -> str:
    return (
        f"Shaping: {bound} is at a limit for the {group} group; sent from {used}, the next "
        "address control/domainbindings gives."
    )


def shaping_suspended(group: str, source: str, until: float, said: str) -> bytes:
    """An automation rule suspended the path: answered at once, without connecting."""
    import time  # start-up: only a suspended delivery formats a date

    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))
    return (
        f"ZDeliveries to the {group} group from {source} are suspended until {when} "
        f"(control/shaping.toml), because it said: {one_line(said)}; qmail will retry. "
        "(#4.4.5)\n"
    ).encode("utf-8", "replace")


def note_suspended(group: str, source: str, seconds: int) -> str:
    return (
        f"Shaping: the {group} group from {source} is suspended for {seconds} s: its reply "
        "matched an automation rule of control/shaping.toml."
    )


def note_rate_lowered(group: str, source: str, rate: str, seconds: int) -> str:
    return (
        f"Shaping: the {group} group from {source} is held to {rate} for {seconds} s, then "
        "back in steps: its reply matched an automation rule of control/shaping.toml."
    )


def note_shaping_unread(error: str) -> str:
    return f"{one_line(error, 300)}; no shaping applied."


def note_shaping_off(why: str) -> str:
    return f"Shaping unusable ({why}); delivered unshaped."


def group_full(group: str, limit: int, waited: int) -> bytes:
    """The MX group stayed full for control/mxgroupwait seconds: qmail-send retries later."""
    return (
        f"ZToo many deliveries to MX group {group} at once (limit {limit}); "
        f"waited {waited} seconds. (#4.4.5)\n"
    ).encode("utf-8", "replace")
