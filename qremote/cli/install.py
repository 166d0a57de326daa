"""``qremote install`` / ``qremote uninstall``: put qremote in place of qmail-remote.

Install renames ``bin/qmail-remote`` to ``bin/qmail-remote.orig`` and puts qremote's thin
client in its place: the compiled one where there is a C compiler, with the Python one
beside it as ``bin/qmail-remote.python`` (the path of every delivery qremoted does not
take), else the Python one itself. Every replacement is atomic (write, fsync, rename) and
running install twice changes nothing. Before it finishes, install runs the new program as the
qmailr user exactly as qmail-rspawn would (empty environment, cwd the qmail home) and
requires qmail's usage report back. If it does not come back, the original is put back
and the reason printed: a program qmailr cannot run makes qmail-rspawn bounce every
message for good, which is far worse than not installing.
"""

from __future__ import annotations

import filecmp
import os
import pwd
import subprocess
import sys
import sysconfig

import qremote
from qremote import report
from qremote.atomic import write_file
from qremote.daemon import client
from qremote.daemon import compiled as cbuild
from qremote.daemon.service import (
    cron_jobs,
    log_script,
    run_script,
    systemd_unit,
    verifyd_run_script,
    verifyd_systemd_unit,
)
from qremote.verify import wire as verify_wire

MARKER = "# qremote wrapper: installed by `qremote install`"
USAGE = report.USAGE + b"\0"


class InstallError(Exception):
    """Install or uninstall cannot go on; the message says why and what to do."""


def import_paths() -> list[str]:
    """Directories the wrapper needs on sys.path: qremote itself and its dependencies."""
    paths = [os.path.dirname(os.path.dirname(os.path.abspath(qremote.__file__)))]
    for key in ("purelib", "platlib"):
        path = sysconfig.get_paths()[key]
        if path not in paths:
            paths.append(path)
    return paths


def wrapper_text(home: str, python: str | None = None) -> str:
    """The program installed as bin/qmail-remote.

    ``-I -S`` keeps start-up near the bare interpreter and immune to the environment; a
    failed import still answers with a report (``Z``) and exit 0, never a bounce.
    """
    python = python or sys.executable
    return f"""#!{python} -IS
{MARKER}; `qremote uninstall` restores qmail-remote.orig.
import os
import sys

sys.path[:0] = {import_paths()!r}
try:
    from qremote.cli.qmail_remote import main
except BaseException as e:
    import sys as _s
    if len(_s.argv) < 4:
        os.write(1, {USAGE!r})
    else:
        os.write(1, b"Zqremote cannot start: " + repr(e).encode()[:300] + b" (#4.3.0)\\n\\0")
    os._exit(0)
main(home={home!r})
"""


def filter_wrapper_text(home: str, python: str | None = None) -> str:
    """The Python ``qremote-dkimverify`` installed in the qmail home: the compiled filter's
    fallback (``bin/qremote-dkimverify.python``), or the filter itself without a compiler.
    ``-I -S`` as for qmail-remote's: start-up near the bare interpreter. The home is
    written in: qmail-smtpd's environment has no QMAILHOME."""
    python = python or sys.executable
    return f"""#!{python} -IS
{MARKER}: qremote-dkimverify's Python path.
import sys

sys.path[:0] = {import_paths()!r}
from qremote.verify.filter import main

main(home={home!r})
"""


def _atomic_copy(src: str, dst: str) -> None:
    st = os.stat(src)
    with open(src, "rb") as f:
        data = f.read()
    write_file(dst, data, st.st_mode & 0o7777)
    try:
        os.chown(dst, st.st_uid, st.st_gid)
    except PermissionError:
        pass


def is_wrapper(path: str) -> bool:
    """True for either of qremote's clients (the compiled one keeps the marker too)."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError:
        return False
    return MARKER.encode() in data


def is_compiled(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF" and is_wrapper(path)
    except OSError:
        return False


def python_of(program: str) -> str:
    """The interpreter a ``#!`` program names (the wrapper's first line); for the compiled
    client, the one its Python path names."""
    if is_compiled(program) and os.path.exists(program + ".python"):
        program += ".python"
    with open(program, "rb") as f:
        first = f.readline(4096)
    words = first[2:].split() if first.startswith(b"#!") else []
    return os.fsdecode(words[0]) if words else sys.executable


def _can(st: os.stat_result, pw: pwd.struct_passwd, groups: set[int], bit: int) -> bool:
    """Whether ``pw`` has permission ``bit`` (4 read, 1 search/execute) on the file."""
    if pw.pw_uid == 0:
        return True
    if st.st_uid == pw.pw_uid:
        return bool(st.st_mode >> 6 & bit)
    if st.st_gid in groups:
        return bool(st.st_mode >> 3 & bit)
    return bool(st.st_mode & bit)


def first_blocked(paths: list[str], pw: pwd.struct_passwd) -> str | None:
    """The first directory or file on the way to any of ``paths`` (followed through
    symbolic links, as exec and import follow them) that ``pw`` may not pass, said as
    'X is not readable by user' ; None when the user can reach them all. Root can tell
    this only from the mode bits: it may itself go everywhere."""
    import grp

    groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}
    for target in paths:
        for path in dict.fromkeys([os.path.abspath(target), os.path.realpath(target)]):
            parts = path.split(os.sep)
            for i in range(1, len(parts) + 1):
                step = os.sep.join(parts[:i]) or os.sep
                try:
                    st = os.stat(step)
                except OSError:
                    break
                last = i == len(parts)
                bit = 1 if (not last or os.path.isdir(step)) else 4
                if not _can(st, pw, groups, bit):
                    what = "searchable" if bit == 1 else "readable"
                    mode = oct(st.st_mode & 0o777)
                    return f"{step} is not {what} by {pw.pw_name} (mode {mode})"
    return None


def _blocked(program: str, pw: pwd.struct_passwd) -> str | None:
    """What keeps ``pw`` from the interpreter or the package, and what to do; None when
    nothing does (the program failed for another reason)."""
    where = first_blocked([python_of(program), *import_paths()], pw)
    if where is None:
        return None
    return (
        f"{where}; install qremote where {pw.pw_name} can read it, e.g. in a virtualenv of "
        "/usr/bin/python3 under /opt/qremote (README, Installing it for real)"
    )


def check_as_user(program: str, home: str, user: str) -> str | None:
    """Run ``program`` as qmail-rspawn would; None when qmail's usage report comes back."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return f"there is no user {user!r} (qmail runs qmail-remote as qmailr; use --user)"
    kwargs: dict = {}
    if os.geteuid() == 0:
        kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    elif pw.pw_uid != os.geteuid():
        return f"only root can run the check as {user!r}"
    try:
        proc = subprocess.run(
            [program],
            env={},
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=60,
            **kwargs,
        )
    except OSError as e:
        return f"{user} cannot run {program}: {_blocked(program, pw) or e.strerror}"
    except subprocess.TimeoutExpired:
        return f"{program} did not answer within 60 seconds"
    if proc.returncode != 0 or proc.stdout != USAGE:
        blocked = _blocked(program, pw)
        if blocked is not None:
            return f"{program} run as {user} does not start: {blocked}"
        shown = proc.stdout[:300].decode("utf-8", "replace").replace("\n", " ").replace("\0", "")
        return (
            f"{program} run as {user} exited {proc.returncode} and said {shown!r} instead of "
            f"qmail's usage report (is {sys.executable} and everything under "
            f"{import_paths()[0]} readable by {user}?)"
        )
    return None


def _put_client(home: str, current: str, python: str | None, compiled: bool) -> str:
    """Write the thin client(s); says which one ``bin/qmail-remote`` is now."""
    fallback = current + ".python"
    text = wrapper_text(home, python).encode()
    write_file(fallback, text, 0o755)
    if compiled:
        tmp = f"{current}.qremote-build.{os.getpid()}"
        try:
            cc = cbuild.build(home, fallback, MARKER, tmp)
            os.chmod(tmp, 0o755)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.rename(tmp, current)
            return f"the compiled thin client (built with {cc}), {fallback} its Python path"
        except (cbuild.BuildError, OSError) as e:
            reason = str(e)
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        reason = "--python-client"
    write_file(current, text, 0o755)
    return f"the Python thin client ({reason})"


def install(
    home: str,
    user: str = "qmailr",
    python: str | None = None,
    service: str | None = None,
    systemd: str | None = None,
    compiled: bool = True,
    cron: str | None = None,
) -> str:
    bindir = os.path.join(home, "bin")
    current = os.path.join(bindir, "qmail-remote")
    orig = os.path.join(bindir, "qmail-remote.orig")
    created_orig = False
    if is_wrapper(current):
        if not os.path.exists(orig):
            raise InstallError(f"{current} is qremote but {orig} is missing; reinstall qmail")
    else:
        if not os.path.exists(current):
            raise InstallError(f"{current} does not exist: is QMAILHOME ({home}) right?")
        if os.path.exists(orig):
            if not filecmp.cmp(current, orig, shallow=False):
                raise InstallError(
                    f"{orig} exists and differs from {current}; move one of them away first"
                )
        else:
            _atomic_copy(current, orig)
            created_orig = True
    which = _put_client(home, current, python, compiled)
    problem = check_as_user(current, home, user)
    if problem is not None:
        _atomic_copy(orig, current)
        if os.path.exists(current + ".python"):
            os.unlink(current + ".python")
        if created_orig:
            os.unlink(orig)
        raise InstallError(f"not installed, original qmail-remote restored: {problem}")
    _state_dirs(home, user)
    said = f"installed: {current} is qremote, the original is {orig}\n{current}: {which}"
    if service:
        _service_dir(home, service, user, python or sys.executable)
        said += (
            f"\nqremoted: {service} runs it; `ln -s {service} /etc/service/` (Debian's "
            "daemontools-run; /service/ elsewhere) starts it "
            "(qmail-remote delivers in-process until it runs)"
        )
    if systemd:
        command = f"{python or sys.executable} -m qremote.cli.qremote"
        write_file(systemd, systemd_unit(home, command, user).encode(), 0o644)
        said += (
            f"\nqremoted: {systemd} runs it; `systemctl daemon-reload && systemctl enable "
            f"--now {os.path.basename(systemd)}` starts it"
        )
    if cron:
        command = f"{python or sys.executable} -m qremote.cli.qremote"
        write_file(cron, cron_jobs(home, command).encode(), 0o644)
        said += f"\ncron: {cron} runs key rotation hourly and TLS reports daily"
    return said


def _service_dir(home: str, service: str, user: str, python: str) -> None:
    """A daemontools/runit directory: run (qremoted as ``user``) and log/run (multilog)."""
    command = f"{python} -m qremote.cli.qremote"
    _supervised(service, run_script(home, command, user))


def _supervised(service: str, run: str) -> None:
    """``run`` and a log/run (multilog as qmaill, into log/main, which qmaill owns)."""
    os.makedirs(os.path.join(service, "log", "main"), mode=0o755, exist_ok=True)
    write_file(os.path.join(service, "run"), run.encode(), 0o755)
    write_file(os.path.join(service, "log", "run"), log_script().encode(), 0o755)
    try:
        pw = pwd.getpwnam("qmaill")
    except KeyError:
        return
    if os.geteuid() == 0:
        os.chown(os.path.join(service, "log", "main"), pw.pw_uid, pw.pw_gid)


def _state_dirs(home: str, user: str) -> None:
    """``$QMAILHOME/qremote/`` (MX-group slots) and ``queue/lock/tcpto6``, owned by the
    qmail-remote user, who must be able to write them."""
    pw = pwd.getpwnam(user)
    state = os.path.join(home, "qremote")
    os.makedirs(state, mode=0o700, exist_ok=True)
    paths = [state]
    lock = os.path.join(home, "queue", "lock")
    if os.path.isdir(lock):
        tcpto6 = os.path.join(lock, "tcpto6")
        if not os.path.exists(tcpto6):
            write_file(tcpto6, b"\0" * 2048, 0o644)
        paths.append(tcpto6)
    if os.geteuid() == 0:
        for path in paths:
            os.chown(path, pw.pw_uid, pw.pw_gid)


def install_filter(
    home: str,
    smtpd_user: str = "qmaild",
    python: str | None = None,
    compiled: bool = True,
    service: str | None = None,
    systemd: str | None = None,
) -> str:
    """``bin/qremote-dkimverify`` (compiled where there is a compiler, handing each message
    to the verifying daemon, with ``.python`` beside it as its in-process path; else the
    Python filter itself), the daemon's socket folder owned by ``smtpd_user``, and the
    files that run the daemon."""
    program = os.path.join(home, "bin", "qremote-dkimverify")
    fallback = program + ".python"
    text = filter_wrapper_text(home, python).encode()
    write_file(fallback, text, 0o755)
    which = None
    if compiled:
        tmp = f"{program}.qremote-build.{os.getpid()}"
        try:
            cc = cbuild.build(home, fallback, MARKER, tmp, source=cbuild.VERIFY_SOURCE)
            os.chmod(tmp, 0o755)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.rename(tmp, program)
            which = f"the compiled filter (built with {cc}): verifyd verifies, {fallback} if not"
        except (cbuild.BuildError, OSError) as e:
            which = f"the Python filter, verifying in-process ({e})"
            if os.path.exists(tmp):
                os.unlink(tmp)
    if which is None or which.startswith("the Python"):
        write_file(program, text, 0o755)
        which = which or "the Python filter, verifying in-process (--python-client)"
    said = f"{program}: {which}"
    folder = os.path.join(home, verify_wire.SOCKET_DIR)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    # start-up: each command loads only what it uses
    from qremote.verify.verifyd import StartError, user_ids

    try:
        uid, gid = user_ids(smtpd_user)
        if os.geteuid() == 0:
            os.chown(folder, uid, gid)
    except StartError:
        said += f"\nverifyd: there is no user {smtpd_user!r} (qmail-smtpd's; --smtpd-user)"
    command = f"{python or sys.executable} -m qremote.cli.qremote"
    if service:
        _supervised(service, verifyd_run_script(home, command, smtpd_user))
        said += f"\nverifyd: {service} runs it; `ln -s {service} /etc/service/` starts it"
    if systemd:
        write_file(systemd, verifyd_systemd_unit(home, command, smtpd_user).encode(), 0o644)
        said += (
            f"\nverifyd: {systemd} runs it; `systemctl daemon-reload && systemctl enable "
            f"--now {os.path.basename(systemd)}` starts it"
        )
    return said


def uninstall(home: str) -> str:
    bindir = os.path.join(home, "bin")
    current = os.path.join(bindir, "qmail-remote")
    orig = os.path.join(bindir, "qmail-remote.orig")
    if not is_wrapper(current):
        return f"not installed: {current} is not qremote; nothing changed"
    if not os.path.exists(orig):
        raise InstallError(f"{orig} is missing: cannot restore the original qmail-remote")
    os.rename(orig, current)
    if is_wrapper(current + ".python"):
        os.unlink(current + ".python")
    said = f"uninstalled: {current} is the original qmail-remote again"
    verify = os.path.join(bindir, "qremote-dkimverify")
    if os.path.exists(verify):
        said += (
            f"\n{verify} is left in place: qmail-smtpd runs it where tcprules set QMAILQUEUE to"
            " it, and would refuse mail without it; remove it after they no longer do"
        )
    running = running_daemon(home)
    if running is not None:
        said += f"\n{running}"
    return said


def running_daemon(home: str) -> str | None:
    """Words about a qremoted still serving ``home`` (it now serves no one) and how to
    stop it as it was started; None when none runs."""
    import re

    status = client.status(home)
    if status is None:
        return None
    found = re.search(r"qremoted pid (\d+)", status)
    pid = int(found.group(1)) if found else 0
    parent = _parent(pid) if pid else None
    if parent is not None and status.startswith("worker "):
        pid = parent[0]  # a worker: the master is what runs (and what to stop)
        parent = _parent(pid)
    how = f"kill {pid}" if pid else "stop it"
    if parent is not None and parent[1] == "supervise":
        try:
            folder = os.readlink(f"/proc/{parent[0]}/cwd")
            how = f"svc -d {folder} (and remove its link from /service)"
        except OSError:
            how = "svc -d on its service directory"
    elif parent is not None and parent[0] == 1 and os.path.exists(
        "/etc/systemd/system/qremoted.service"
    ):
        how = "systemctl disable --now qremoted"
    return f"qremoted (pid {pid}) is still running for {home} and serves no one now: {how}"


def _parent(pid: int) -> tuple[int, str] | None:
    """(pid, command name) of a process's parent, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{ppid}/comm") as f:
            return ppid, f.read().strip()
    except (OSError, ValueError, IndexError):
        return None
