"""``qremote``: the administrator's command (install, uninstall, and what later issues add)."""

from __future__ import annotations

import argparse
import sys

from qremote.control import qmail_home


def _install(args: argparse.Namespace) -> str:
    from qremote.cli.install import install

    return install(qmail_home(), user=args.user, python=args.python)


def _uninstall(args: argparse.Namespace) -> str:
    from qremote.cli.install import uninstall

    return uninstall(qmail_home())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qremote", description="qremote administration")
    sub = p.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="put qremote in place of bin/qmail-remote")
    inst.add_argument("--user", default="qmailr", help="user qmail runs qmail-remote as")
    inst.add_argument("--python", help="interpreter for the wrapper (default: this one)")
    inst.set_defaults(func=_install)
    uninst = sub.add_parser("uninstall", help="put the original qmail-remote back")
    uninst.set_defaults(func=_uninstall)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from qremote.cli.install import InstallError
    from qremote.control import ControlError

    try:
        print(args.func(args))
    except (InstallError, ControlError, OSError) as e:
        print(f"qremote {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
