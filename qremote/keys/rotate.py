"""``qremote keys rotate``: the cron job that rotates each domain's key, one step a run.

For each domain, and in it for each kind of key whose active one is a ``<selector>.pem``
behind a symbolic link (``default`` for RSA, ``ed25519`` for Ed25519), on its own
schedule:

1. when the active key is older than the rotation period, make a new key (inactive) of
   the same kind. A key's age is its file's modification time, as ``keys list`` shows it
   (a key the job makes gets the job's clock), so a key that is already old is replaced
   on the first run;
2. publish it: write ``<selector>.zone`` beside it and, when ``primary`` is configured,
   send an RFC 2136 UPDATE signed with TSIG;
3. verify: ask every authoritative name server of the domain directly; only when all of
   them serve the exact record is ``default`` switched (atomically) to the new key;
4. keep the old record published for the grace period (qmail's queuelifetime plus two
   days by default: a message signed with it may still be in a queue), then withdraw it.

Each run moves each domain at most one step further, writes its state file atomically
after every step, logs one line per step, and holds a lock: it is safe to run as often as
wanted, to interrupt, and to run twice at once. A kind switches only to a key whose record
every authoritative server serves, so a message is never signed with a key not yet served,
whatever the other kind is doing. Waiting for name servers is normal (exit 0); a step
that needs a person (the primary refuses our TSIG key or the UPDATE) is said in words and
makes the run exit non-zero, so cron's mail and a monitoring check both see it.
``control/dkimrotate`` configures it::

    period=90          days before a key is replaced
    grace=9            days an old key stays published (default: queuelifetime + 2 days)
    primary=192.0.2.53 DNS server that accepts UPDATE (ip or ip:port); omit to publish by hand
    tsig=name:hmac-sha256:base64secret
    ttl=3600
    revealdir=/var/www/dkim-old  after withdrawal, copy the old private key there (world-
                                 readable), as dkim-rotate does: old mail becomes repudiable
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization

from qremote.atomic import write_file
from qremote.control import ControlDir, ControlError
from qremote.keys import manage, records
from qremote.routing.addresses import parse_nameserver

DAY = 86400
STATE_FILE = "rotation.json"


@dataclass(frozen=True)
class Config:
    period: int = 90 * DAY
    grace: int = 9 * DAY
    primary: tuple[str, int] | None = None
    tsig: tuple[str, str, str] | None = None
    ttl: int = 3600
    reveal_dir: str | None = None


def load_config(control: ControlDir) -> Config:
    queuelifetime = control.integer("queuelifetime", 604800)
    values: dict[str, str] = {}
    for line in control.listing("dkimrotate"):
        key, sep, value = line.partition("=")
        if not sep:
            raise ControlError(f"control/dkimrotate: {line!r} is not name=value")
        values[key.strip().lower()] = value.strip()
    unknown = set(values) - {"period", "grace", "primary", "tsig", "ttl", "revealdir"}
    if unknown:
        raise ControlError(f"control/dkimrotate: unknown setting {sorted(unknown)[0]!r}")

    def number(name: str, default: int, unit: int) -> int:
        if name not in values:
            return default
        if not values[name].isdigit():
            raise ControlError(f"control/dkimrotate: {name}={values[name]!r} is not a number")
        return int(values[name]) * unit

    primary = None
    if values.get("primary"):
        primary = parse_nameserver(values["primary"])
    tsig = None
    if values.get("tsig"):
        parts = values["tsig"].split(":", 2)
        if len(parts) != 3:
            raise ControlError("control/dkimrotate: tsig must be name:algorithm:secret")
        tsig = (parts[0], parts[1], parts[2])
    if primary and not tsig:
        raise ControlError("control/dkimrotate: primary needs tsig=name:algorithm:secret")
    return Config(
        period=number("period", 90 * DAY, DAY),
        grace=number("grace", queuelifetime + 2 * DAY, DAY),
        primary=primary,
        tsig=tsig,
        ttl=number("ttl", 3600, 1),
        reveal_dir=values.get("revealdir") or None,
    )


# -- state -----------------------------------------------------------------------------------


def _state_path(folder: str) -> str:
    return os.path.join(folder, STATE_FILE)


def load_state(folder: str) -> dict[str, dict]:
    try:
        with open(_state_path(folder)) as f:
            return json.load(f)["selectors"]
    except FileNotFoundError:
        return {}


def save_state(folder: str, selectors: dict[str, dict]) -> None:
    data = json.dumps({"selectors": selectors}, indent=1, sort_keys=True).encode()
    write_file(_state_path(folder), data, 0o600)


# -- DNS -------------------------------------------------------------------------------------


class DnsTrouble(Exception):
    """A DNS step could not be done now; the run logs it and the next run retries.

    ``person`` is True when retrying cannot help until someone changes something (a
    refused TSIG key, a refused UPDATE): the run then exits non-zero."""

    def __init__(self, text: str, person: bool = False) -> None:
        super().__init__(text)
        self.person = person


def _load_key(path: str):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


class Dns:
    """The DNS side of rotation: UPDATE at the primary, checks at every authoritative NS."""

    def __init__(self, config: Config, servers: list[tuple[str, int]]) -> None:
        self.config = config
        self.servers = servers

    def _update(self, domain: str, build: Callable) -> None:
        import dns.exception
        import dns.name
        import dns.query
        import dns.rcode
        import dns.tsig
        import dns.tsigkeyring
        import dns.update

        if self.config.primary is None or self.config.tsig is None:
            return
        name, algorithm, secret = self.config.tsig
        ip, port = self.config.primary
        where = f"the primary {ip}:{port}"
        try:
            keyring = dns.tsigkeyring.from_text({name: (algorithm, secret)})
            update = dns.update.UpdateMessage(
                domain + ".", keyring=keyring, keyname=dns.name.from_text(name)
            )
        except Exception as e:  # noqa: BLE001 - a secret that is not base64, an odd name
            raise DnsTrouble(
                f"tsig= in control/dkimrotate is not usable ({e}): it must be "
                "name:algorithm:base64secret",
                person=True,
            ) from None
        build(update)
        try:
            answer = dns.query.tcp(update, ip, port=port, timeout=10)
        except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadTime) as e:
            raise DnsTrouble(
                f"{where} refused our TSIG key {name!r} ({e.__class__.__name__}): check tsig= "
                "in control/dkimrotate against the key the primary has",
                person=True,
            ) from None
        except (dns.exception.Timeout, OSError) as e:
            raise DnsTrouble(
                f"{where} did not answer ({e.__class__.__name__}); the next run retries"
            ) from None
        except Exception as e:  # noqa: BLE001 - any other failure: retried next run
            raise DnsTrouble(f"UPDATE to {ip}:{port} failed: {e.__class__.__name__}") from None
        rcode = answer.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        text = dns.rcode.to_text(rcode)
        if rcode == dns.rcode.NOTAUTH:
            raise DnsTrouble(
                f"{where} answered NOTAUTH: it does not take TSIG key {name!r} for {domain} "
                "(check tsig= in control/dkimrotate) or is not authoritative for it",
                person=True,
            )
        if rcode in (dns.rcode.REFUSED, dns.rcode.NOTZONE):
            raise DnsTrouble(
                f"{where} refused the UPDATE of {domain} ({text}): allow UPDATE there for "
                f"TSIG key {name!r}, or correct primary= in control/dkimrotate",
                person=True,
            )
        raise DnsTrouble(f"UPDATE refused by {ip}:{port}: {text}")

    def publish(self, domain: str, selector: str, key) -> None:
        strings = records.quoted(records.record(key))
        self._update(
            domain,
            lambda u: u.replace(f"{selector}._domainkey", self.config.ttl, "TXT", strings),
        )

    def withdraw(self, domain: str, selector: str) -> None:
        self._update(domain, lambda u: u.delete(f"{selector}._domainkey", "TXT"))

    def _resolver(self):
        import dns.nameserver
        import dns.resolver

        if self.servers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(i, p) for i, p in self.servers]
        else:
            resolver = dns.resolver.Resolver()
        resolver.lifetime = 10
        return resolver

    def authoritative(self, domain: str) -> list[tuple[str, str]]:
        """(name server, address) of every authoritative server of the domain."""
        import dns.exception

        resolver = self._resolver()
        try:
            names = [r.target.to_text() for r in resolver.resolve(domain, "NS")]
            out = []
            for ns in sorted(names):
                for rdtype in ("A", "AAAA"):
                    try:
                        out += [(ns, r.address) for r in resolver.resolve(ns, rdtype)]
                    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                        pass
        except dns.exception.DNSException as e:
            raise DnsTrouble(f"cannot find the name servers of {domain}: {e}") from None
        if not out:
            raise DnsTrouble(f"no address for any name server of {domain}")
        return out

    def missing(self, domain: str, selector: str, key) -> list[str]:
        """Why each authoritative name server does not (yet) serve exactly this key's
        record: ``not yet served by NS (address)``, or that it could not be asked."""
        wanted = records.record(key).encode()
        name = f"{selector}._domainkey.{domain}."
        lacking, unasked = [], []
        for ns, address in self.authoritative(domain):
            server = f"{ns.rstrip('.')} ({address})"
            try:
                got = ask_authoritative(name, address)
            except DnsTrouble as e:
                unasked.append(f"{server}: {e}")
                continue
            if wanted not in got:
                lacking.append(server)
        said = [f"not yet served by {', '.join(lacking)}"] if lacking else []
        said += [f"cannot ask {why}" for why in unasked]
        return said


def ask_authoritative(name: str, address: str, port: int = 53) -> list[bytes]:
    """The TXT strings an authoritative server serves for ``name``: over UDP first, over
    TCP when the answer is truncated (as resolvers ask). DnsTrouble says what went wrong
    when the server could not be asked (unreachable, silent, or refusing), which is not
    the same as not serving the record."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    query = dns.message.make_query(name, "TXT")
    query.flags &= ~0x0100  # no recursion: ask the server about its own zone
    try:
        answer, _tcp = dns.query.udp_with_fallback(query, address, timeout=5, port=port)
    except dns.exception.Timeout:
        raise DnsTrouble("no answer within 5 seconds (UDP, then TCP if truncated)") from None
    except (OSError, dns.exception.DNSException) as e:
        raise DnsTrouble(f"{e.__class__.__name__}: {e}") from None
    rcode = answer.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise DnsTrouble(f"it answered {dns.rcode.to_text(rcode)}")
    return [b"".join(r.strings) for rr in answer.answer for r in rr if hasattr(r, "strings")]


# -- the steps -------------------------------------------------------------------------------


KINDS = (("rsa", "default"), ("ed25519", "ed25519"))
"""Each kind of key and the link that names its active selector."""


def _active_selector(folder: str, link_name: str = "default") -> str | None:
    link = os.path.join(folder, link_name)
    if not os.path.islink(link):
        return None
    target = os.path.basename(os.readlink(link))
    return target[:-4] if target.endswith(".pem") else None


def key_born(path: str) -> int:
    """When a key was made: its file's modification time (what ``keys list`` shows)."""
    return int(os.stat(path).st_mtime)


def _kind_of(folder: str, selector: str, info: dict) -> str | None:
    """The kind of a selector in the state file (older state files did not say)."""
    if "kind" in info:
        return info["kind"]
    try:
        key = _load_key(os.path.join(folder, f"{selector}.pem"))
    except (OSError, ValueError, TypeError):
        return None
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa"


@dataclass
class _Step:
    """One run's work on one domain: what every step reads, and what needs a person."""

    control: str
    domain: str
    config: Config
    dns: Dns
    now: int
    log: Callable[[str], None]
    folder: str = ""
    state: dict[str, dict] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = os.path.join(self.control, "domainkeys", self.domain)
        self.state = load_state(self.folder)

    def save(self) -> None:
        save_state(self.folder, self.state)

    def trouble(self, selector: str, e: DnsTrouble) -> None:
        """Remember what held a selector up (``qremote check`` says it after a day)."""
        self.state[selector]["problem"] = str(e)
        if e.person:
            self.problems.append(f"{self.domain}: {e}")
        self.save()


def rotate_domain(
    control: str, domain: str, config: Config, dns_side: Dns, now: int, log: Callable[[str], None]
) -> list[str]:
    """One step for each kind of key of one domain; the problems that need a person."""
    step = _Step(control, domain, config, dns_side, now, log)
    if not any(_active_selector(step.folder, link) for _, link in KINDS):
        if os.path.exists(os.path.join(step.folder, "default")):
            log(
                f"{domain}: skipped: 'default' is a plain file; rotation needs <selector>.pem "
                "and a default symlink"
            )
        return step.problems
    for kind, link in KINDS:
        active = _active_selector(step.folder, link)
        if active is not None:
            _rotate_kind(step, kind, active)
    _withdraw(step)
    return step.problems


def _rotate_kind(step: _Step, kind: str, active: str) -> None:
    domain, folder, state, now, log = step.domain, step.folder, step.state, step.now, step.log
    config, dns_side = step.config, step.dns
    if active not in state or state[active]["state"] != "active":
        state[active] = {
            "state": "active",
            "since": state.get(active, {}).get("since", now),
            "kind": kind,
        }
        # A run interrupted right after switching left the old key marked active.
        for selector, info in state.items():
            if (
                selector != active
                and info["state"] == "active"
                and _kind_of(folder, selector, info) == kind
            ):
                state[selector] = {"state": "retiring", "since": now, "kind": kind}
                log(f"{domain}: {selector} retiring (switch completed)")
        step.save()

    waiting = [
        s
        for s, v in state.items()
        if v["state"] in ("pending", "published") and _kind_of(folder, s, v) == kind
    ]
    born = key_born(os.path.join(folder, f"{active}.pem"))
    if not waiting and now - born >= config.period:
        today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
        path, _ = manage.new_key(step.control, domain, kind=kind, today=today, inactive=True)
        os.utime(path, (now, now))  # made now, by the job's clock
        selector = os.path.basename(path)[:-4]
        state[selector] = {"state": "pending", "since": now, "kind": kind}
        step.save()
        log(f"{domain}: made {selector} ({'rsa 2048' if kind == 'rsa' else kind}), pending")
        waiting = [selector]

    for selector in waiting:
        key = _load_key(os.path.join(folder, f"{selector}.pem"))
        if state[selector]["state"] == "pending":
            with open(os.path.join(folder, f"{selector}.zone"), "w") as f:
                f.write(records.zone_lines(domain, selector, key, config.ttl) + "\n")
            try:
                dns_side.publish(domain, selector, key)
            except DnsTrouble as e:
                log(f"{domain}: {selector} not published yet: {e}")
                step.trouble(selector, e)
                continue
            how = "sent to the primary" if config.primary else f"publish {selector}.zone by hand"
            state[selector] = {"state": "published", "since": now, "kind": kind}
            step.save()
            log(f"{domain}: {selector} published ({how})")
        try:
            lacking = dns_side.missing(domain, selector, key)
        except DnsTrouble as e:
            log(f"{domain}: {selector} not verified: {e}")
            step.trouble(selector, e)
            continue
        if lacking:
            log(f"{domain}: {selector} waiting: {'; '.join(lacking)}")
            continue
        manage.activate(step.control, domain, selector)
        state[active] = {"state": "retiring", "since": now, "kind": kind}
        state[selector] = {"state": "active", "since": now, "kind": kind}
        step.save()
        log(f"{domain}: {selector} is active; {active} retiring")


def _withdraw(step: _Step) -> None:
    domain, folder, state, now, log = step.domain, step.folder, step.state, step.now, step.log
    config = step.config
    for selector, info in sorted(state.items()):
        if info["state"] == "retiring" and now - info["since"] >= config.grace:
            try:
                step.dns.withdraw(domain, selector)
            except DnsTrouble as e:
                log(f"{domain}: {selector} not withdrawn yet: {e}")
                step.trouble(selector, e)
                continue
            zone = os.path.join(folder, f"{selector}.zone")
            if os.path.exists(zone):
                os.unlink(zone)
            state[selector] = {"state": "retired", "since": now, "kind": info.get("kind")}
            step.save()
            how = "" if config.primary else " (remove its record by hand)"
            log(f"{domain}: {selector} withdrawn{how}, retired")
            if config.reveal_dir:
                _reveal(config.reveal_dir, folder, domain, selector, log)


def stuck(folder: str, config: Config, now: int) -> list[str]:
    """Why a domain's rotation has not moved for more than a day, if it has not: a new key
    still waiting to be published or served, an old one still not withdrawn."""
    out = []
    for selector, info in sorted(load_state(folder).items()):
        since = int(info.get("since", now))
        limit = DAY + (config.grace if info["state"] == "retiring" else 0)
        if info["state"] in ("pending", "published", "retiring") and now - since > limit:
            what = info.get("problem") or (
                "not yet served by every authoritative name server"
                if info["state"] == "published"
                else "not yet published"
                if info["state"] == "pending"
                else "not yet withdrawn"
            )
            days = (now - since) // DAY
            out.append(f"{selector} {info['state']} for {days} days: {what}")
    return out


def _reveal(target: str, folder: str, domain: str, selector: str, log) -> None:
    """Publish a withdrawn private key: nobody can sign with it any more, so its signatures
    on old mail prove nothing (repudiability)."""
    os.makedirs(target, exist_ok=True)
    dest = os.path.join(target, f"{selector}._domainkey.{domain}.pem")
    with open(os.path.join(folder, f"{selector}.pem"), "rb") as f:
        write_file(dest, f.read(), 0o644)
    log(f"{domain}: {selector} private key revealed in {dest}")


LAST_RUN = ".rotate.last"
"""control/domainkeys/.rotate.last: when the job last ran (seconds since the epoch), so
that ``qremote check`` can tell a rotation whose cron line is missing or failing."""


def last_run(control: ControlDir) -> int | None:
    """When the rotation job last ran, or None if it never did."""
    try:
        with open(os.path.join(control.path, "domainkeys", LAST_RUN)) as f:
            return int(f.read(32).strip())
    except (OSError, ValueError):
        return None


def run(home: str, now: int, log: Callable[[str], None]) -> int:
    """One run over every domain: 0; 1 when another run holds the lock; 2 when a domain
    could not make progress for a reason that needs a person (said in the log lines)."""
    control = ControlDir(os.path.join(home, "control"))
    config = load_config(control)
    servers = [parse_nameserver(line) for line in control.listing("nameservers")]
    root = os.path.join(control.path, "domainkeys")
    if not os.path.isdir(root):
        log("no control/domainkeys: nothing to rotate")
        return 0
    lock = os.open(os.path.join(root, ".rotate.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another rotation is running; nothing done")
            return 1
        dns_side = Dns(config, servers)
        problems: list[str] = []
        for domain in sorted(os.listdir(root)):
            if os.path.isdir(os.path.join(root, domain)) and not domain.startswith("."):
                problems += rotate_domain(control.path, domain, config, dns_side, now, log)
        # The real clock, not --now: check compares it with the real clock.
        write_file(os.path.join(root, LAST_RUN), f"{int(time.time())}\n".encode(), 0o644)
        return 2 if problems else 0
    finally:
        os.close(lock)
