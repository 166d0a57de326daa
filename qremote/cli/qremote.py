"""``qremote``: the administrator's command (install, check, status, keys, daemon, ...);
each subcommand loads only what it uses."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from qremote.control import ControlDir, qmail_home

if TYPE_CHECKING:
    from qremote.metrics.http import Endpoint


def _install(args: argparse.Namespace) -> str:
    # start-up: each command loads only what it uses
    from qremote.cli.install import install, install_filter

    home = qmail_home()
    said = install(
        home,
        user=args.user,
        python=args.python,
        service=args.service,
        systemd=args.systemd,
        cron=args.cron,
        compiled=not args.python_client,
    )
    return said + "\n" + install_filter(
        home,
        smtpd_user=args.smtpd_user,
        python=args.python,
        compiled=not args.python_client,
        service=args.verifyd_service,
        systemd=args.verifyd_systemd,
    )


def _uninstall(args: argparse.Namespace) -> str:
    # start-up: each command loads only what it uses
    from qremote.cli.install import uninstall

    return uninstall(qmail_home())


def _sign(args: argparse.Namespace) -> str:
    """Sign stdin to stdout exactly as qmail-remote signs before sending."""
    import os

    # start-up: each command loads only what it uses
    from qremote.control import ControlDir
    from qremote.settings import signing_config
    from qremote.signing.sign import SigningError, Unsignable, sign_message, store_for

    control = ControlDir(os.path.join(qmail_home(), "control"))
    message = sys.stdin.buffer.read()
    try:
        signed = sign_message(
            message, os.fsencode(args.sender), store_for(control.path), signing_config(control)
        )
    except (SigningError, Unsignable) as e:
        raise CommandFailed(str(e)) from None
    sys.stdout.buffer.write(signed.headers + message)
    sys.stdout.buffer.flush()
    if args.verbose:
        print(signed.note, file=sys.stderr)
    return ""


def _check(args: argparse.Namespace) -> str:
    # start-up: each command loads only what it uses
    from qremote.cli.check import client_kind, is_note, problems

    if args.route is not None:
        return _check_route(args.route, args.sender)
    found = problems(qmail_home(), args.user)
    if [line for line in found if not is_note(line)]:
        raise CheckFailed("\n".join(found))
    said = f"qremote check: no problems found; bin/qmail-remote is {client_kind(qmail_home())}"
    return "\n".join([said, *found])


def _check_route(recipient: str, sender: str) -> str:
    """Connect where a delivery would, through TLS and AUTH, and stop before MAIL,
    saying each step as it goes (so a relay that goes silent shows where)."""
    import asyncio
    import time

    # start-up: each command loads only what it uses
    from qremote.control import ControlError
    from qremote.delivery import probe
    from qremote.delivery.context import Probe
    from qremote.settings import load_settings

    host = recipient.rpartition("@")[2]
    if not host:
        raise CommandFailed(f"--route {recipient!r}: no domain")
    try:
        settings = load_settings(qmail_home())
    except ControlError as e:
        raise CommandFailed(str(e)) from None
    started = time.monotonic()

    def say(step: str) -> None:
        print(f"  {time.monotonic() - started:5.1f}s {step}", flush=True)

    print(
        f"qremote check --route {recipient}: as a delivery would, with its time-outs "
        f"(timeoutconnect {settings.timeout_connect}s, timeoutremote "
        f"{settings.timeout_remote}s per reply)",
        flush=True,
    )
    outcome = asyncio.run(
        probe(settings, host, sender.encode("utf-8", "surrogateescape"), Probe(say))
    )
    text = outcome.message.decode("utf-8", "replace")
    if not text.startswith("K"):
        raise CheckFailed(f"qremote check --route {recipient}: failed:\n{text[1:].rstrip()}")
    return f"qremote check --route {recipient}: ok\n{text[1:].rstrip()}"


def _tlsrpt(args: argparse.Namespace) -> str:
    # start-up: each command loads only what it uses
    from qremote.tlsrpt.send import run

    if args.tlsrpt_command != "send":
        raise CommandFailed("say which: send (see --help)")
    for line in run(qmail_home(), args.now):
        print(line)
    return ""


def _shaping(args: argparse.Namespace) -> str:
    # start-up: each command loads only what it uses
    import asyncio

    from qremote.cli.status import resume_shaping, shaping_lines

    if args.shaping_command is None:
        return "\n".join(shaping_lines(qmail_home()))
    if args.shaping_command == "defaults":
        # start-up: only this subcommand reads the file
        from qremote.shaping.config import defaults_text

        return defaults_text().rstrip("\n")
    try:
        lifted = asyncio.run(resume_shaping(qmail_home(), args.group))
    except Exception as e:  # noqa: BLE001 - Redis trouble: say it, one line
        why = f"{e.__class__.__name__}: {e}"
        raise CommandFailed(f"the shared state did not answer: {why}") from None
    if not lifted:
        raise CommandFailed(f"nothing is suspended or slowed for {args.group}")
    return f"{args.group}: resumed on {lifted} path{'s' if lifted > 1 else ''}"


def _keys(args: argparse.Namespace) -> str:
    import os

    # start-up: each command loads only what it uses
    from qremote.keys import manage

    control = os.path.join(qmail_home(), "control")
    if args.keys_command is None:
        raise CommandFailed("say which: new, activate, dns, list or rotate (see --help)")
    try:
        if args.keys_command == "new":
            path, zone = manage.new_key(
                control,
                args.domain,
                args.selector,
                args.type,
                args.bits,
                args.force,
                args.user,
                inactive=args.inactive,
            )
            if manage.is_active(path):
                state = (
                    "; it is ACTIVE now: mail from this domain is signed with it from the next"
                    " delivery on.\n; Publish the record below first, or receivers will fail"
                    " the signatures until it is served."
                )
            else:
                state = (
                    "; it is not active (another key is, or --inactive was given); publish"
                    " the record below,\n; wait for it to be served, then: qremote keys"
                    f" activate {args.domain} {os.path.basename(path)[:-4]}"
                )
            return f"; key written to {path}\n{state}\n{zone}"
        if args.keys_command == "rotate":
            import time

            # start-up: each command loads only what it uses
            from qremote.keys.rotate import run

            now = args.now if args.now is not None else int(time.time())
            status = run(qmail_home(), now, print)
            if status == 1:
                raise CommandFailed("another rotation is running")
            if status == 2:
                raise CommandFailed("a domain needs attention before its rotation can go on")
            return ""
        if args.keys_command == "activate":
            return manage.activate(control, args.domain, args.selector)
        if args.keys_command == "dns":
            return manage.dns_text(control, args.domain)
        return manage.list_text(control)
    except manage.KeyCommandError as e:
        raise CommandFailed(str(e)) from None


def _seconds(text: str) -> float:
    """A number of seconds above 0 and below a day, for argparse."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 to 86400)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 1000000")
    return value


def _workers(text: str) -> int:
    if text == "0":
        return 0
    return _count(text)


def _daemon(args: argparse.Namespace) -> str:
    """qremoted in the foreground, until SIGTERM."""
    import asyncio

    # start-up: each command loads only what it uses
    from qremote.daemon.server import Daemon, StartError

    try:
        # start-up: each command loads only what it uses
        from qremote.daemon import workers

        count = args.workers if args.workers != 0 else workers.default_count()
        endpoint = _metrics_endpoint(args.metrics, "metrics")
        daemon = Daemon(
            qmail_home(),
            grace=args.grace,
            heartbeat=args.heartbeat,
            deliveries=args.deliveries,
            clients=args.clients,
            patience=args.patience,
            workers=count,
            metrics=endpoint,
            log_format=args.log_format,
        )
        if count > 1:
            workers.run(daemon)
        else:
            asyncio.run(daemon.run())
    except StartError as e:
        raise CommandFailed(str(e)) from None
    return ""


def _metrics_endpoint(option: str | None, name: str) -> Endpoint | None:
    """Where a daemon serves /metrics: its ``--metrics`` option, else ``control/<name>``,
    else nowhere (off unless asked). A bad address stops the daemon, with the reason."""
    # start-up: each command loads only what it uses
    from qremote.metrics.http import CONTROL_FILES, AddressError, Endpoint

    where = f"--metrics {option}"
    if option is None:
        option = ControlDir(os.path.join(qmail_home(), "control")).line(name)
        where = f"control/{name}"
    try:
        return Endpoint.setting(option, CONTROL_FILES[name])
    except AddressError as e:
        raise CommandFailed(f"{where}: {e}") from None


def _verifyd(args: argparse.Namespace) -> str:
    """The verifying daemon in the foreground, until SIGTERM."""
    # start-up: each command loads only what it uses
    from qremote.verify import verifyd

    endpoint = _metrics_endpoint(args.metrics, "verifydmetrics")
    failed = verifyd.main(qmail_home(), args.user, args.threads, args.memory << 20, endpoint)
    if failed:
        raise CommandFailed(failed)
    return ""


def _status(args: argparse.Namespace) -> str:
    # start-up: each command loads only what it uses
    from qremote.cli.status import text

    return text(qmail_home())


class CheckFailed(Exception):
    """qremote check found problems; the message lists them one per line."""


class CommandFailed(Exception):
    """The command could not do its job (nothing was written); the message says why."""


def parser() -> argparse.ArgumentParser:
    # start-up: each command loads only what it uses
    from qremote import __version__

    p = argparse.ArgumentParser(
        prog="qremote",
        description="qremote administration. Every command works on the qmail home named by"
        " the QMAILHOME environment variable (default /var/qmail).",
    )
    p.add_argument("--version", action="version", version=f"qremote {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="put qremote in place of bin/qmail-remote")
    inst.add_argument("--user", default="qmailr", help="user qmail runs qmail-remote as")
    inst.add_argument("--python", help="interpreter for the wrapper (default: this one)")
    inst.add_argument(
        "--service",
        metavar="DIR",
        help="also write a daemontools/runit directory that runs qremoted (e.g. "
        "/var/qmail/supervise/qremoted); link it into /service to start it",
    )
    inst.add_argument(
        "--systemd",
        metavar="FILE",
        help="also write a systemd unit that runs qremoted (e.g. "
        "/etc/systemd/system/qremoted.service)",
    )
    inst.add_argument(
        "--cron",
        metavar="FILE",
        help="also write the cron jobs (key rotation, TLS reports) with this installation's"
        " paths (e.g. /etc/cron.d/qremote)",
    )
    inst.add_argument(
        "--python-client",
        action="store_true",
        help="install the Python thin client (and the Python qremote-dkimverify) even when a"
        " C compiler is there",
    )
    inst.add_argument(
        "--smtpd-user",
        default="qmaild",
        help="user qmail-smtpd runs as (tcpserver -u): the verifying daemon runs as it",
    )
    inst.add_argument(
        "--verifyd-service",
        metavar="DIR",
        help="also write a daemontools/runit directory that runs the verifying daemon (e.g."
        " /var/qmail/supervise/qremote-verifyd)",
    )
    inst.add_argument(
        "--verifyd-systemd",
        metavar="FILE",
        help="also write a systemd unit that runs the verifying daemon (e.g."
        " /etc/systemd/system/qremote-verifyd.service)",
    )
    inst.set_defaults(func=_install)
    uninst = sub.add_parser("uninstall", help="put the original qmail-remote back")
    uninst.set_defaults(func=_uninstall)
    sign = sub.add_parser("sign", help="sign stdin to stdout as qmail-remote would")
    sign.add_argument("--sender", required=True, help="envelope sender ('' for a bounce)")
    sign.add_argument("-v", "--verbose", action="store_true", help="say what was signed")
    sign.set_defaults(func=_sign)
    check = sub.add_parser("check", help="say what is wrong with this installation")
    check.add_argument("--user", default="qmailr", help="user qmail runs qmail-remote as")
    check.add_argument(
        "--route",
        metavar="RECIPIENT",
        help="connect as a delivery to RECIPIENT would (TLS, AUTH) and stop before MAIL",
    )
    check.add_argument(
        "--sender", default="", help="the envelope sender for --route (authsenders picks by it)"
    )
    check.set_defaults(func=_check)
    daemon = sub.add_parser("daemon", help="run qremoted in the foreground (as qmailr)")
    daemon.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds in-flight deliveries get after SIGTERM before they are deferred",
    )
    daemon.add_argument(
        "--heartbeat",
        type=_seconds,
        default=20.0,
        help="seconds between signs of life to a waiting qmail-remote (which, after three"
        " missed, gives up only if qremoted is no longer running at all)",
    )
    daemon.add_argument(
        "--patience",
        type=_seconds,
        default=300.0,
        help="seconds of silence a waiting qmail-remote bears from a running qremoted"
        " before it defers (and, after the final dot, beyond timeoutremote)",
    )
    daemon.add_argument(
        "--workers",
        type=_workers,
        default=0,
        help="processes serving deliveries (default 0: one per core; 1: a single process,"
        " which keeps all kept connections in one place and costs the least memory)",
    )
    daemon.add_argument(
        "--deliveries",
        type=_count,
        default=5000,
        help="deliveries run at the same time (the rest wait their turn); default 5000",
    )
    daemon.add_argument(
        "--clients",
        type=_count,
        default=None,
        help="clients taken at once (the rest wait in the socket's backlog); default: as"
        " many as the descriptor limit has room for",
    )
    daemon.add_argument(
        "--metrics",
        default=None,
        metavar="ADDRESS:PORT",
        help="serve Prometheus /metrics there (default: control/metrics, else off;"
        " 'off' turns it off); an address other than loopback needs the word 'public' after"
        " it in control/metrics for qremote check to accept it",
    )
    daemon.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="each delivery as the text line (default) or as one JSON record",
    )
    daemon.set_defaults(func=_daemon)
    verifyd = sub.add_parser(
        "verifyd",
        help="run the verifying daemon behind qremote-dkimverify in the foreground (as"
        " qmail-smtpd's user, qmaild)",
    )
    verifyd.add_argument(
        "--user",
        default=None,
        help="started as root: the user to become before serving (qmail-smtpd's, qmaild);"
        " verifyd never serves as root, nor as a user who can read control/domainkeys/",
    )
    verifyd.add_argument(
        "--threads",
        type=_count,
        default=8,
        help="messages verified at once (default 8): a slow DNS answer holds one thread",
    )
    verifyd.add_argument(
        "--memory",
        type=_count,
        default=256,
        help="megabytes of messages being verified at once (default 256); a larger"
        " message is verified alone",
    )
    verifyd.add_argument(
        "--metrics",
        default=None,
        metavar="ADDRESS:PORT",
        help="serve Prometheus /metrics there (default: control/verifydmetrics, else off)",
    )
    verifyd.set_defaults(func=_verifyd)
    status = sub.add_parser(
        "status", help="MX-group slots, tcpto, and qremoted's deliveries and connections"
    )
    status.set_defaults(func=_status)
    keys = sub.add_parser("keys", help="signing keys: new, activate, dns, list, rotate")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND")
    new = keys_sub.add_parser("new", help="make a key and print its DNS record")
    new.add_argument("domain")
    new.add_argument("--selector", help="default: qYYYYMMDD (with 'e' for ed25519)")
    new.add_argument("--type", choices=["rsa", "ed25519"], default="rsa")
    new.add_argument("--bits", type=int, default=2048)
    new.add_argument("--force", action="store_true", help="allow 1024-bit RSA")
    new.add_argument("--user", default="qmailr", help="owner of the key when run as root")
    new.add_argument("--inactive", action="store_true", help="do not make it the active key")
    act = keys_sub.add_parser("activate", help="make a selector the active key (atomic)")
    act.add_argument("domain")
    act.add_argument("selector")
    dns = keys_sub.add_parser("dns", help="zone-file lines for a domain's keys")
    dns.add_argument("domain")
    keys_sub.add_parser("list", help="every key with its state, algorithm, size and age")
    rot = keys_sub.add_parser("rotate", help="the cron job: one rotation step per domain")
    rot.add_argument("--now", type=int, help="seconds since the epoch to act as (tests)")
    keys.set_defaults(func=_keys)
    shp = sub.add_parser("shaping", help="traffic shaping: what is suspended or slowed; resume")
    shp_sub = shp.add_subparsers(dest="shaping_command")
    res = shp_sub.add_parser("resume", help="lift a group's suspension and lowered rate now")
    res.add_argument("group", help="the group's name as qremote status shows it")
    shp_sub.add_parser("defaults", help="print qremote's rules for Gmail, Yahoo, Outlook, Apple")
    shp.set_defaults(func=_shaping)
    rpt = sub.add_parser("tlsrpt", help="SMTP TLS reports (RFC 8460): send")
    rpt_sub = rpt.add_subparsers(dest="tlsrpt_command")
    send = rpt_sub.add_parser("send", help="the daily job: report every complete UTC day")
    send.add_argument("--now", type=int, help="seconds since the epoch to act as (tests)")
    rpt.set_defaults(func=_tlsrpt)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # start-up: each command loads only what it uses
    from qremote.cli.install import InstallError
    from qremote.control import ControlError

    try:
        said = args.func(args)
        if said:
            print(said)
    except CheckFailed as e:
        print(str(e))  # findings are the command's output: `qremote check > file` keeps them
        return 1
    except (InstallError, ControlError, CommandFailed, OSError) as e:
        print(f"qremote {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
