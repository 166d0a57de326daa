"""A real qmail (notqmail 1.09, from ``../shared/vendor/``) built into a throw-away home.

qmail compiles its users' ids into its programs, so the users and groups of its
INSTALL.ids.md are made first when missing (system accounts, no login shell, no home
folder). ``make setup check`` installs into the folder named by ``conf-qmail``;
``config-fast`` writes the control files. It takes seconds on two cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARBALL = os.path.join(os.path.dirname(REPO), "shared", "vendor", "notqmail-1.09.tar.gz")

USERS = [
    ("alias", "nofiles"),
    ("qmaild", "nofiles"),
    ("qmaill", "nofiles"),
    ("qmailp", "nofiles"),
    ("qmailq", "qmail"),
    ("qmailr", "qmail"),
    ("qmails", "qmail"),
]


def missing_reason() -> str | None:
    """Why a real qmail cannot be built here, or None when it can."""
    if not os.path.exists(TARBALL):
        return (
            f"{TARBALL} is not there (a clone of the repository alone has no ../shared/): "
            "the real-qmail tests need notqmail's source"
        )
    if os.geteuid() != 0:
        return "building and running a real qmail needs root (its users, setuid programs)"
    if shutil.which("make") is None or shutil.which("cc") is None:
        return "building qmail needs make and a C compiler (Debian: build-essential)"
    if shutil.which("supervise") is None:
        return "qremoted runs under daemontools here (Debian: daemontools)"
    if shutil.which("tcpserver") is None:
        return "qmail-smtpd runs under tcpserver here (Debian: ucspi-tcp)"
    return None


def ensure_users() -> None:
    for group in ("nofiles", "qmail"):
        if subprocess.run(["getent", "group", group], capture_output=True).returncode:
            subprocess.run(["groupadd", "--system", group], check=True)
    for user, group in USERS:
        if subprocess.run(["id", user], capture_output=True).returncode:
            subprocess.run(
                ["useradd", "--system", "-g", group, "-d", "/nonexistent", "-M",
                 "-s", "/usr/sbin/nologin", user],
                check=True,
            )


def build(top: str) -> str:
    """Build and install qmail under ``top``; the qmail home's path."""
    ensure_users()
    src = os.path.join(top, "src")
    home = os.path.join(top, "qmail")
    with tarfile.open(TARBALL) as tar:
        tar.extractall(src, filter="tar")
    (tree,) = [os.path.join(src, d) for d in os.listdir(src)]
    with open(os.path.join(tree, "conf-qmail"), "w") as f:
        f.write(home + "\n")
    for target in ("setup", "check"):
        done = subprocess.run(["make", target], cwd=tree, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"make {target} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    subprocess.run(
        ["./config-fast", "me.example.org"], cwd=tree, check=True, capture_output=True
    )
    shutil.rmtree(src)
    return home


def build_programs(top: str, *names: str) -> str:
    """Some of qmail's programs alone, compiled for a home under ``top`` (seconds; no users
    needed): the home's path, the programs in it. qmail-inject queues through
    ``$QMAILQUEUE`` (notqmail's qmail.c), so a test sees the envelope exactly as the real
    program makes it from its arguments; qmail-remote is the C client benchmarks compare
    against."""
    src = os.path.join(top, "src")
    home = os.path.join(top, "home")
    os.makedirs(os.path.join(home, "control"))
    with open(os.path.join(home, "control", "me"), "w") as f:
        f.write("me.example.org\n")
    with tarfile.open(TARBALL) as tar:
        tar.extractall(src, filter="tar")
    (tree,) = [os.path.join(src, d) for d in os.listdir(src)]
    with open(os.path.join(tree, "conf-qmail"), "w") as f:
        f.write(home + "\n")
    done = subprocess.run(["make", *names], cwd=tree, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"make failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    for name in names:
        shutil.copy(os.path.join(tree, name), os.path.join(home, name))
    shutil.rmtree(src)
    return home


def build_inject(top: str) -> str:
    """qmail-inject alone (see :func:`build_programs`): the program's path."""
    return os.path.join(build_programs(top, "qmail-inject"), "qmail-inject")


def make_top() -> str:
    top = tempfile.mkdtemp(prefix="qremote-qmail-", dir="/tmp")
    os.chmod(top, 0o755)  # the qmail users live in there
    return top


def start_send(home: str, log) -> subprocess.Popen:
    """qmail-send as qmail's rc starts it (qmail-start, ./Mailbox deliveries), its log
    lines through ``cat`` into ``log``. It is a root process: stop it with SIGTERM."""
    return subprocess.Popen(
        [os.path.join(home, "bin", "qmail-start"), "./Mailbox", "cat"],
        env={"PATH": f"{home}/bin:/usr/bin:/bin"},
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
