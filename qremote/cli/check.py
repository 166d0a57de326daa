"""``qremote check``: what is wrong with this installation, one line per problem.

Each check reads what qmail-remote would read and reports what would make a delivery
fail (``Z``) or behave unexpectedly, naming the file and value. It changes nothing.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query

from qremote.cli import verifycheck
from qremote.cli.install import is_compiled, is_wrapper
from qremote.control import ControlDir, ControlError
from qremote.daemon import client
from qremote.daemon.descriptors import needed_for
from qremote.groups import rules as group_rules
from qremote.keys import rotate
from qremote.keys.manage import rotation_states
from qremote.keys.records import public_value
from qremote.keys.rotate import last_run
from qremote.keys.rotate import load_config as rotation_config
from qremote.metrics.http import CONTROL_FILES as CONTROL_PORTS
from qremote.metrics.http import AddressError, Endpoint
from qremote.relay import smtpauth
from qremote.relay.plan import relaying_for
from qremote.routing import source
from qremote.routing.addresses import parse_nameserver
from qremote.routing.dnsquery import make_resolver, on_loopback
from qremote.routing.routes import RouteError, describe, parse_route
from qremote.settings import (
    CONTROL_FILES,
    DaneMode,
    arc_domains,
    integer,
    parse_file,
    signing_config,
)
from qremote.shaping import config as shaping_config
from qremote.signing.keys import KeyProblem, KeyStore
from qremote.signing.tags import parse_tags
from qremote.tls.policy import decide, read_policy_files
from qremote.tlsrpt.rua import mail_address
from qremote.verify import dkimpolicy
from qremote.verify import filter as verify_filter
from qremote.verify.txt import DnsTemporary, TxtLookup

_SHARED_SCHEMES = ("redis://", "rediss://", "unix://")
"""What control/sharedstate may hold: the URL forms redis-py connects to."""


def _guard(fn) -> Iterator[str]:
    try:
        yield from fn()
    except ControlError as e:
        yield str(e)


def _basics(control: ControlDir) -> Iterator[str]:
    if control.line("helohost") is None and control.line("me") is None:
        yield "control/me and control/helohost are both missing"
    for entry in CONTROL_FILES:  # every whole-number file, whoever reads it
        if entry.kind == "integer":
            try:
                integer(control, entry.name)
            except ControlError as e:
                yield str(e)
    for line in control.listing("nameservers"):
        try:
            parse_nameserver(line)
        except ControlError as e:
            yield str(e)
    try:
        signing_config(control)
    except ControlError as e:
        yield str(e)
    yield from group_rules.parse(control.lines("mxgroups") or [])[1]
    url = (control.line("sharedstate") or "").strip()
    if url and not url.startswith(_SHARED_SCHEMES):
        yield f"control/sharedstate: {url!r} is not a redis:// URL"


def _formats(control: ControlDir) -> Iterator[str]:
    """The files whose format is known and that no other check reads: what qmail-remote,
    qmail-send, the verify filter or the rotation job would refuse or silently ignore."""
    import ipaddress

    for name in ("helohost", "me"):
        value = control.line(name)
        if value is not None and (not value or not value.isascii() or not value.isprintable()
                                  or " " in value.strip()):  # fmt: skip
            yield f"control/{name}: {value[:60]!r} is not a host name"
    for name in ("smtproutes", "authsenders"):
        for number, line in enumerate(control.lines(name) or [], start=1):
            if line.strip() and not line.startswith("#") and ":" not in line:
                yield (
                    f"control/{name} line {number}: no ':' (domain:relay), so qmail-remote "
                    "ignores the line"
                )
    for name in ("moreipme", "notipme"):
        for entry in control.listing(name):
            try:
                ipaddress.ip_address(entry)
            except ValueError:
                yield f"control/{name}: {entry[:60]!r} is not an IP address"
    contact = (control.line("tlsrptcontact") or "").strip()
    if contact and mail_address(contact)[0] is None:
        yield f"control/tlsrptcontact: {contact[:60]!r} is not an address (local@host.name)"
    length = control.line("dkimlength")
    if length is not None and length.strip().lower() not in ("pass", "policy"):
        yield f"control/dkimlength: {length.strip()[:40]!r} is not pass or policy"
    for read in (
        lambda: parse_file(control, "utf8headers"),
        lambda: parse_file(control, "mtasts"),
        lambda: dkimpolicy.parse(control.lines("dkimverifypolicy") or []),
        lambda: verify_filter.fallback_word(control),
        lambda: rotation_config(control),
        lambda: source.parse_bindings(control.lines("domainbindings") or []),
        lambda: source.parse_outgoing_ip(control.line("outgoingip")),
    ):
        try:
            read()
        except ControlError as e:
            yield str(e)


def _metrics(control: ControlDir) -> Iterator[str]:
    """The /metrics addresses: written as the daemons read them, and loopback unless the
    administrator says (``public``) that others are meant to reach them."""
    for name, port in CONTROL_PORTS.items():
        try:
            endpoint = Endpoint.setting(control.line(name), port)
        except AddressError as e:
            yield f"control/{name}: {e}; the daemon will not start"
            continue
        exposed = endpoint.exposed(f"control/{name}") if endpoint is not None else None
        if exposed is not None:
            yield exposed


def _bindings(control: ControlDir) -> Iterator[str]:
    table = source.parse_bindings(control.lines("domainbindings") or [])
    for binding in table.values():
        try:
            source.check_local(source.Source(binding.ip, "", binding.where))
        except ControlError as e:
            yield str(e)
    outgoing = source.parse_outgoing_ip(control.line("outgoingip"))
    if outgoing:
        try:
            source.check_local(source.Source(outgoing, "", "control/outgoingip"))
        except ControlError as e:
            yield str(e)


def _tls(control: ControlDir) -> Iterator[str]:
    folder = os.path.join(control.path, "tlshosts")
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name == "exhaustivelist":
                continue
            if not name.endswith(".pem"):
                yield f"control/tlshosts/{name}: not used (only <mx>.pem and exhaustivelist are)"
                continue
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            try:
                ctx.load_verify_locations(cafile=os.path.join(folder, name))
            except (OSError, ssl.SSLError) as e:
                yield f"control/tlshosts/{name}: not a usable CA file ({e})"
    cert = os.path.join(control.path, "clientcert.pem")
    if os.path.exists(cert):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_cert_chain(cert)
        except (OSError, ssl.SSLError) as e:
            yield f"control/clientcert.pem: not a usable certificate and key ({e})"
    ciphers = control.line("tlsclientciphers")
    if ciphers:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(ciphers.strip())
        except ssl.SSLError:
            yield f"control/tlsclientciphers: OpenSSL accepts no cipher in {ciphers.strip()!r}"


def _relays(control: ControlDir, user: str) -> Iterator[str]:
    """Every route line (smtproutes, authsenders) as a delivery would use it, with
    control/smtpauth; the files that hold passwords must be for qmail-remote's eyes only."""
    table = smtpauth.parse(control.lines("smtpauth") or [])
    yield from table.problems
    usable = smtpauth.AuthTable(table.entries)
    files = read_policy_files(control.path)
    holding = {"smtpauth"} if any(e.credentials for e in table.entries.values()) else set()
    for name in ("authsenders", "smtproutes"):
        for key, value in control.mapping(name).items():
            try:
                route = parse_route(value, describe(name, key))
                if route is None:
                    continue
                if route.credentials is not None:
                    holding.add(name)
                relay_tls = relaying_for(route, usable).tls
                if relay_tls is not None:
                    decide(files, route.relay, relay_tls)
            except (RouteError, ControlError) as e:
                yield str(e)
    for name in sorted(holding):
        yield from _secret_file(os.path.join(control.path, name), user)


def _dane(control: ControlDir) -> Iterator[str]:
    """With control/dane (or control/danecheck) present: is the resolver one whose AD bit
    DANE may believe (on loopback), and does it validate (AD on a signed name)?"""
    if control.line("dane") is None and control.line("danecheck") is None:
        return  # the default: DANE where the resolver allows it, nothing to warn about
    try:
        value = parse_file(control, "dane")
    except ControlError as e:
        yield str(e)
        return
    if value is DaneMode.OFF:
        return
    servers = [parse_nameserver(line) for line in control.listing("nameservers")]
    resolver = make_resolver(servers, 5, 10)
    shown = ", ".join(str(getattr(n, "address", n)) for n in resolver.nameservers)
    if not on_loopback(resolver):
        yield (
            f"control/dane: the resolver ({shown}) is not on loopback, so its DNSSEC "
            "answers are not believed and DANE is never applied; run a validating "
            "resolver (unbound) on this host"
        )
        return
    name = (control.line("danecheck") or ".").strip() or "."
    first = resolver.nameservers[0]
    address, port = str(getattr(first, "address", first)), int(getattr(first, "port", 53))
    query = dns.message.make_query(name, "SOA", want_dnssec=True)
    try:
        answer = dns.query.udp(query, address, port=port, timeout=5)
    except Exception as e:  # noqa: BLE001 - any failure to ask is the finding
        yield f"control/dane: cannot ask the resolver ({shown}) about {name}: {e}"
        return
    if not answer.flags & dns.flags.AD:
        yield (
            f"control/dane: the resolver ({shown}) does not validate DNSSEC (no AD on the "
            f"SOA of {name}, which control/danecheck names; default: the root zone), so "
            "DANE is never applied; run a validating resolver (unbound)"
        )


def _writable_folders(home: str, user: str) -> Iterator[str]:
    """MTA-STS remembers policies and records TLS-report sessions under $QMAILHOME/qremote:
    qmail-remote (``user``) must be able to write there, or a policy seen once is
    forgotten and the day's report is empty."""
    import pwd

    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return
    if account.pw_uid == 0:
        return
    for name in ("qremote", "qremote/mta-sts", "qremote/tlsrpt"):
        path = os.path.join(home, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        mine = st.st_uid == account.pw_uid and st.st_mode & 0o200
        group = st.st_gid == account.pw_gid and st.st_mode & 0o020
        if not (mine or group or st.st_mode & 0o002):
            yield (
                f"{path}: {user} (qmail-remote) cannot write here, so MTA-STS policies are "
                f"not remembered and TLS reports stay empty; chown {user} {path}"
            )


def _secret_file(path: str, user: str) -> Iterator[str]:
    """A file with passwords: readable by qmail-remote's user, by nobody else but root."""
    import grp
    import pwd
    import stat

    st = os.stat(path)
    shown = f"control/{os.path.basename(path)}"
    mode = stat.S_IMODE(st.st_mode)
    fix = f"chown {user} {shown}; chmod 600 {shown}"
    if mode & stat.S_IROTH:
        yield f"{shown} holds passwords and anyone can read it (mode {mode:04o}); {fix}"
        return
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return
    if mode & stat.S_IRGRP and st.st_gid != account.pw_gid:
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        yield f"{shown} holds passwords and group {group} can read it; {fix}"
    owner_reads = st.st_uid == account.pw_uid and mode & stat.S_IRUSR
    group_reads = st.st_gid == account.pw_gid and mode & stat.S_IRGRP
    if account.pw_uid != 0 and not owner_reads and not group_reads:
        yield f"{shown}: {user} (qmail-remote) cannot read it; {fix}"


def _foreign_owner(st: os.stat_result, user: str, root_suffices: bool = False) -> str | None:
    """The owner of a file ``user`` needs as its own, when it is someone else (by name, or
    uid); None when it is ``user``'s or ``user`` is unknown here. ``root_suffices``: a
    ``user`` that is root is served whoever owns the file."""
    import pwd

    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return None
    if st.st_uid == uid or (root_suffices and uid == 0):
        return None
    try:
        return pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return str(st.st_uid)


def _owner(key, user: str) -> Iterator[str]:
    """qmail-remote runs as ``user``: the key must be its own (mode 0600 is checked on load),
    unless that user is root, who reads any file."""
    owner = _foreign_owner(os.stat(key.path), user, root_suffices=True)
    if owner is not None:
        yield (
            f"control/domainkeys/{key.domain}/{os.path.basename(os.path.realpath(key.path))}: "
            f"owned by {owner}, so {user} (qmail-remote) cannot read it; chown {user} it"
        )


def _keys(control: ControlDir, user: str = "qmailr") -> Iterator[str]:
    store = KeyStore(os.path.join(control.path, "domainkeys"))
    if not os.path.isdir(store.root):
        return
    lookup = None
    for name in sorted(os.listdir(store.root)):
        path = os.path.join(store.root, name)
        try:
            if os.path.isdir(path):
                if not os.path.lexists(os.path.join(path, "default")):
                    yield _waiting_key(path, name)
                active = store.domain_keys(name)
                for key in active:
                    yield from _owner(key, user)
                yield from _rotation(path, name, active, control)
                if active and lookup is None:
                    lookup = _lookup(control)
                for key in active:
                    yield from _published(lookup, key)
            elif name == "default":
                store.fallback()
        except KeyProblem as e:
            yield str(e)


_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}$")


def _shaping(control: ControlDir) -> Iterator[str]:
    """control/shaping.toml: a file that cannot be read (no shaping applies), and every
    key, value or action in it that qremote does not apply."""
    loaded = shaping_config.load(control.path)
    if loaded.error is not None:
        yield f"{loaded.error}: no shaping applies until it is fixed"
    yield from loaded.problems


def _arcsign(control: ControlDir) -> Iterator[str]:
    """control/arcsign: each line a domain (or ``*``) whose key can seal: an RSA key,
    the only algorithm both independent ARC verifiers take."""
    store = KeyStore(os.path.join(control.path, "domainkeys"))
    for domain in sorted(arc_domains(control)):
        if domain == "*":
            continue
        if not _DOMAIN.match(domain):
            yield f"control/arcsign: {domain[:60]!r} is not a domain or *"
            continue
        keys = store.domain_keys(domain)
        if not keys and store.fallback() is None:
            yield (
                f"control/arcsign: {domain} has no key in control/domainkeys: its forwarded "
                "mail is neither signed nor sealed"
            )
        elif keys and not any(k.is_rsa for k in keys):
            yield (
                f"control/arcsign: {domain} has no RSA key (ARC seals with RSA): its "
                "forwarded mail is signed, not sealed"
            )


WAITING_KEY_DAYS = 1
"""A key made with ``keys new --inactive`` waits for its DNS record: a note (check exits 0)
for this long, a problem after it (the record, or the activation, was forgotten)."""


def _waiting_key(folder: str, domain: str) -> str:
    """No 'default' link: a key waiting for DNS on purpose (a note, while it is young) or
    a domain that signs nothing."""
    import time

    pems = [
        os.path.join(folder, n)
        for n in os.listdir(folder)
        if n.endswith(".pem") and not os.path.islink(os.path.join(folder, n))
    ]
    if not pems:
        return f"control/domainkeys/{domain}: no 'default', so no active key"
    newest = max(pems, key=os.path.getmtime)
    selector = os.path.basename(newest)[:-4]
    hours = (time.time() - os.path.getmtime(newest)) / 3600
    if hours < WAITING_KEY_DAYS * 24:
        return (
            f"note: control/domainkeys/{domain}: {selector} waits to be activated (made "
            f"{hours:.0f} hours ago): publish its DNS record (qremote keys dns {domain}), "
            f"then qremote keys activate {domain} {selector}"
        )
    return (
        f"control/domainkeys/{domain}: no 'default', so no active key; {selector} has "
        f"waited {hours / 24:.0f} days to be activated (qremote keys activate {domain} "
        f"{selector} once its DNS record is published)"
    )


ROTATION_LATE = 86400 + 3600
"""A configured rotation whose job has not run for longer than this (a day, and the hour
between two runs of the hourly job) is a problem: keys never rotate."""


def _rotation_job(control: ControlDir) -> Iterator[str]:
    """control/dkimrotate says keys rotate: the job must be running."""
    import time

    if control.lines("dkimrotate") is None:
        return
    when = last_run(control)
    if when is None:
        yield (
            "control/dkimrotate: the rotation job (qremote keys rotate) has never run: "
            "install its cron line (qremote install --cron /etc/cron.d/qremote)"
        )
    elif time.time() - when > ROTATION_LATE:
        hours = (time.time() - when) / 3600
        yield (
            f"control/dkimrotate: the rotation job last ran {hours:.0f} hours ago: is its "
            "cron line installed and working (see its log)?"
        )


def _rotation(folder: str, domain: str, active, control: ControlDir) -> Iterator[str]:
    """A selector the rotation job is withdrawing must not be the one signing, and a
    rotation must not stand still for more than a day."""
    import time

    for why in rotate.stuck(folder, rotate.load_config(control), int(time.time())):
        yield f"control/domainkeys/{domain}: key rotation stuck: {why}"
    states = rotation_states(folder)
    for key in active:
        if states.get(key.selector) in ("retiring", "retired"):
            yield (
                f"control/domainkeys/{domain}: {key.selector} is active but the rotation job "
                f"has it {states[key.selector]}: its DNS record is (or will be) withdrawn"
            )


def _lookup(control: ControlDir):

    servers = [parse_nameserver(line) for line in control.listing("nameservers")]
    return TxtLookup(servers, 30.0)


def _published(lookup, key) -> Iterator[str]:
    """The active key's DNS record must exist and carry this key's public half."""
    name = f"{key.selector}._domainkey.{key.domain}"
    try:
        text = lookup.txt(name)
    except DnsTemporary as e:
        yield f"{name}: cannot check the DNS record now ({e})"
        return
    if text is None:
        yield f"{name}: no TXT record; publish it (qremote keys dns {key.domain})"
        return
    published = parse_tags(text).get(b"p", b"").decode("ascii", "replace")
    if not published:
        yield f"{name}: the DNS record has no key (revoked)"
    elif published != public_value(key.key):
        yield f"{name}: the DNS record does not match control/domainkeys/{key.domain}"


def _install(home: str) -> Iterator[str]:
    program = os.path.join(home, "bin", "qmail-remote")
    if not os.path.exists(program):
        yield f"{program} is missing: is {home} the qmail home? (set QMAILHOME)"
    elif not is_wrapper(program):
        yield f"{program} is not qremote (run: qremote install)"
    tcpto = os.path.join(home, "queue", "lock", "tcpto")
    if not os.path.exists(tcpto):
        yield f"{tcpto} is missing: tcpto is off (qmail's installer creates it)"


def client_kind(home: str) -> str:
    """Which of qremote's thin clients ``bin/qmail-remote`` is, in words."""
    program = os.path.join(home, "bin", "qmail-remote")
    if is_compiled(program):
        return "the compiled thin client (bin/qmail-remote.python is its in-process path)"
    if is_wrapper(program):
        return "the Python thin client"
    return "not qremote"


def _daemon(home: str, user: str) -> Iterator[str]:
    """qremoted's socket, when there is one: qmail-remote (as ``user``) must be able to
    use it, and something must answer on it; otherwise every delivery runs in-process."""
    import stat

    path = os.path.join(home, client.RELATIVE_PATH)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        yield f"{path} is not a socket: qremoted cannot listen there"
        return
    owner = _foreign_owner(st, user, root_suffices=True)
    if owner is not None:
        yield (
            f"{path}: owned by {owner}, so {user} (qmail-remote) cannot use qremoted and "
            f"delivers in-process; run qremoted as {user}"
        )
    said = client.status(home)
    if said is None:
        yield f"{path}: no qremoted answers (it was killed?); deliveries run in-process"
        return
    yield from _room(home, said)
    yield from _served(home, said)


REFUSING_SHARE = 0.5
"""A group whose deliveries since qremoted started ended Z or D more often than this..."""
REFUSING_MIN = 20
"""...out of at least this many: said as a note (its provider may be refusing us)."""


def _served(home: str, status: str) -> Iterator[str]:
    """What qremoted's own numbers say (the ones ``/metrics`` serves): a group most of
    whose deliveries fail, and a ``--metrics`` address others can reach."""
    import re

    for name, k, z, d in re.findall(r"^  (\S+): (\d+) K, (\d+) Z, (\d+) D;", status, re.M):
        done, failed = int(k) + int(z) + int(d), int(z) + int(d)
        if done >= REFUSING_MIN and failed > REFUSING_SHARE * done:
            yield (
                f"note: qremoted: MX group {name}: {failed} of {done} deliveries since it "
                f"started were not delivered ({z} Z, {d} D); see its log for what the "
                "servers say"
            )
    control = ControlDir(os.path.join(home, "control"))
    if (control.line("metrics") or "").strip():
        return  # _metrics reads the file
    found = re.search(r"^metrics at http://\[?([^\]\s]+?)\]?:(\d+)/metrics( public)?$",
                      status, re.M)  # fmt: skip
    if found is not None:
        endpoint = Endpoint(found.group(1), int(found.group(2)), bool(found.group(3)))
        exposed = endpoint.exposed("qremoted --metrics")
        if exposed is not None:
            yield exposed


def _room(home: str, status: str) -> Iterator[str]:
    """qremoted's descriptor limit against qmail's concurrencyremote: a daemon with room
    for fewer clients than qmail-send starts at once makes the rest queue for it."""
    import re

    found = re.search(r"descriptors: (\d+) .*room for (\d+) clients", status)
    if found is None:
        return
    soft, room = int(found.group(1)), int(found.group(2))
    room *= max(len(re.findall(r"^worker \d+: qremoted pid", status, re.M)), 1)
    control = ControlDir(os.path.join(home, "control"))
    text = (control.line("concurrencyremote") or "20").strip()
    if not text.isdigit():
        return  # the settings check names it
    wanted = int(text)
    if room < wanted:
        yield (
            f"qremoted's descriptor limit is {soft}: room for {room} clients at once, but "
            f"control/concurrencyremote is {wanted}; the rest wait for it. Raise its limit "
            f"to {needed_for(wanted)} or more (LimitNOFILE= in the systemd unit, ulimit -n "
            "in the daemontools run script)"
        )


def _backends(control: ControlDir) -> Iterator[str]:
    """The libraries qremote loads only when they are needed: a missing one would show
    only in reports (caps fall back to local) or the smtpd log (mail goes unverified)."""
    try:
        import dkim  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any failure to load is the finding
        yield (
            f"dkimpy cannot be loaded ({e.__class__.__name__}: {e}): qremote-dkimverify "
            "passes mail on unverified; install qremote's dependencies"
        )
    url = (control.line("sharedstate") or "").strip()
    if not url.startswith(_SHARED_SCHEMES):
        return  # none, or one _basics names
    try:
        import redis
    except Exception as e:  # noqa: BLE001
        yield (
            f"control/sharedstate: redis-py cannot be loaded ({e.__class__.__name__}: {e}): "
            "MX-group caps are local to this host only; install qremote's dependencies"
        )
        return
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as e:  # noqa: BLE001
        yield (
            f"control/sharedstate: {url} does not answer ({e.__class__.__name__}): "
            "deliveries use local MX-group caps until it does"
        )


def is_note(line: str) -> bool:
    """A finding that is no problem (check still exits 0): said, not alarmed about."""
    return line.startswith("note: ")


def problems(home: str, user: str = "qmailr") -> list[str]:
    if not os.path.isdir(home):
        return [f"QMAILHOME {home} does not exist (set QMAILHOME to the qmail home)"]
    control = ControlDir(os.path.join(home, "control"))
    found: list[str] = []
    for check in (_basics, _formats, _bindings, _tls, _metrics):
        found.extend(_guard(lambda check=check: check(control)))
    found.extend(_guard(lambda: _relays(control, user)))
    found.extend(_guard(lambda: _dane(control)))
    found.extend(_guard(lambda: _keys(control, user)))
    found.extend(_guard(lambda: _arcsign(control)))
    found.extend(_guard(lambda: _shaping(control)))
    found.extend(_guard(lambda: _rotation_job(control)))
    found.extend(_guard(lambda: _backends(control)))
    found.extend(_install(home))
    found.extend(_writable_folders(home, user))
    found.extend(_daemon(home, user))
    found.extend(_guard(lambda: verifycheck.findings(home)))
    return list(dict.fromkeys(found))  # a file two checks read is named once
