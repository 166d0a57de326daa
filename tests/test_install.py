"""qremote install / uninstall on a qmail home: atomic, idempotent, and checked by running
the new program as the qmail-remote user exactly as qmail-rspawn would."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from qremote.cli.install import MARKER
from qremote.daemon.workers import default_count
from tests.support import rspawn

FAKE_C_CLIENT = b"#!/bin/sh\n# stands in for qmail's C qmail-remote\nexit 0\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs programs as other users")


@pytest.fixture
def qmail():
    # Not under pytest's own temporary folder: that one is closed to other users.
    top = tempfile.mkdtemp(prefix="qremote-install-", dir="/tmp")
    os.chmod(top, 0o755)
    home = pathlib.Path(top) / "qmail"
    (home / "bin").mkdir(parents=True)
    (home / "control").mkdir()
    (home / "control" / "me").write_text("me.example.org\n")
    (home / "queue" / "lock").mkdir(parents=True)
    (home / "bin" / "qmail-remote").write_bytes(FAKE_C_CLIENT)
    os.chmod(home / "bin" / "qmail-remote", 0o711)
    yield home
    shutil.rmtree(top)


def qremote(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qremote.cli.qremote", *args],
        env={**os.environ, "QMAILHOME": str(home)},
        capture_output=True,
        text=True,
    )


def test_install_puts_qremote_in_place_and_keeps_the_original(qmail):
    done = qremote(qmail, "install", "--user", "root")
    assert done.returncode == 0, done.stderr
    assert "installed" in done.stdout
    program = qmail / "bin" / "qmail-remote"
    assert MARKER.encode() in program.read_bytes()
    assert stat.S_IMODE(program.stat().st_mode) == 0o755
    assert (qmail / "bin" / "qmail-remote.orig").read_bytes() == FAKE_C_CLIENT
    run = rspawn.run_args(str(program), str(qmail), [])
    assert run.output == b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0"
    state = qmail / "qremote"
    assert state.is_dir() and stat.S_IMODE(state.stat().st_mode) == 0o700
    assert (qmail / "queue" / "lock" / "tcpto6").read_bytes() == b"\0" * 2048


def test_install_twice_changes_nothing(qmail):
    assert qremote(qmail, "install", "--user", "root").returncode == 0
    first = (qmail / "bin" / "qmail-remote").read_bytes()
    again = qremote(qmail, "install", "--user", "root")
    assert again.returncode == 0, again.stderr
    assert (qmail / "bin" / "qmail-remote").read_bytes() == first
    assert (qmail / "bin" / "qmail-remote.orig").read_bytes() == FAKE_C_CLIENT
    listed = sorted(os.listdir(qmail / "bin"))
    assert listed == [
        "qmail-remote",
        "qmail-remote.orig",
        "qmail-remote.python",
        "qremote-dkimverify",
        "qremote-dkimverify.python",
    ]


def test_install_refuses_to_overwrite_a_different_orig(qmail):
    (qmail / "bin" / "qmail-remote.orig").write_bytes(b"something else\n")
    done = qremote(qmail, "install", "--user", "root")
    assert done.returncode == 1
    assert "qmail-remote.orig exists and differs" in done.stderr
    assert (qmail / "bin" / "qmail-remote").read_bytes() == FAKE_C_CLIENT


def test_install_restores_the_original_when_qmailr_cannot_run_it(qmail, tmp_path):
    private = tmp_path / "private"  # like a virtualenv under /root: closed to others
    private.mkdir(mode=0o700)
    os.symlink(sys.executable, private / "python3")
    done = qremote(qmail, "install", "--user", "nobody", "--python", str(private / "python3"))
    assert done.returncode == 1
    assert "not installed, original qmail-remote restored" in done.stderr
    # It names the folder in the way, not merely the program it could not run.
    assert " is not searchable by nobody (mode 0o700)" in done.stderr
    assert "install qremote where nobody can read it" in done.stderr
    assert (qmail / "bin" / "qmail-remote").read_bytes() == FAKE_C_CLIENT
    assert not (qmail / "bin" / "qmail-remote.orig").exists()
    assert len(done.stderr.strip().splitlines()) == 1


def test_install_without_a_qmail_remote_says_so(tmp_path):
    (tmp_path / "bin").mkdir()
    done = qremote(tmp_path, "install", "--user", "root")
    assert done.returncode == 1
    assert "does not exist: is QMAILHOME" in done.stderr


def test_install_with_an_unknown_user_says_so(qmail):
    done = qremote(qmail, "install", "--user", "no-such-user-qremote")
    assert done.returncode == 1
    assert "there is no user 'no-such-user-qremote'" in done.stderr
    assert (qmail / "bin" / "qmail-remote").read_bytes() == FAKE_C_CLIENT


def test_uninstall_puts_the_original_back_and_is_idempotent(qmail):
    assert qremote(qmail, "install", "--user", "root").returncode == 0
    done = qremote(qmail, "uninstall")
    assert done.returncode == 0, done.stderr
    assert (qmail / "bin" / "qmail-remote").read_bytes() == FAKE_C_CLIENT
    assert not (qmail / "bin" / "qmail-remote.orig").exists()
    again = qremote(qmail, "uninstall")
    assert again.returncode == 0 and "not installed" in again.stdout


def test_uninstall_says_a_qremoted_still_runs_and_how_to_stop_it(qmail):
    import time

    from qremote.daemon import client

    assert qremote(qmail, "install", "--user", "root").returncode == 0
    daemon = subprocess.Popen(
        [sys.executable, "-m", "qremote.cli.qremote", "daemon"],
        env={**os.environ, "QMAILHOME": str(qmail)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while client.status(str(qmail)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        done = qremote(qmail, "uninstall")
    finally:
        daemon.terminate()
        daemon.wait(30)
    assert done.returncode == 0, done.stderr
    assert (
        f"qremoted (pid {daemon.pid}) is still running for {qmail} and serves no one now: "
        f"kill {daemon.pid}"
    ) in done.stdout


def test_install_with_service_writes_a_supervise_directory_that_runs_qremoted(qmail, tmp_path):
    service = tmp_path / "supervise" / "qremoted"
    done = qremote(qmail, "install", "--user", "root", "--service", str(service))
    assert done.returncode == 0, done.stderr
    assert f"`ln -s {service} /etc/service/` (Debian's daemontools-run" in done.stdout
    run, log = service / "run", service / "log" / "run"
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    assert stat.S_IMODE(log.stat().st_mode) == 0o755
    assert (service / "log" / "main").is_dir()
    assert log.read_text() == "#!/bin/sh\nexec setuidgid qmaill multilog t ./main\n"
    # Run it as supervise would, with a stand-in for daemontools' setuidgid.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "setuidgid").write_text('#!/bin/sh\nshift\nexec "$@"\n')
    os.chmod(bin_dir / "setuidgid", 0o755)
    proc = subprocess.Popen(
        [str(run)],
        cwd=service,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        warning = proc.stdout.readline().decode()  # setuidgid is a stand-in: still root
        ready = proc.stdout.readline().decode()
    finally:
        proc.terminate()
    out, err = proc.communicate(timeout=30)
    assert warning.startswith("running as root: run it as qmailr")
    assert ready.startswith("qremoted ") and f"serving {qmail}/qremote/qremoted.sock" in ready
    assert proc.returncode == 0
    assert err == b""  # run says exec 2>&1: everything goes to the log
    # (The descriptors line after "serving" may have been read along with it.) The run
    # script starts the default: one worker per core, a single process on one core.
    cores = default_count()
    stopped = (
        r"qremoted \d+ stopped after 0 deliveries\n"
        if cores == 1
        else rf"{cores} workers: [\d, ]+\nstopping: {cores} workers finish their deliveries\n"
        rf"(worker \d+: qremoted worker \d+ stopped after 0 deliveries\n){{{cores}}}"
        r"qremoted \d+ stopped\n"
    )
    assert re.fullmatch(
        r"(descriptors: \d+ \(hard limit \d+.*\): \d+ clients at once, \d+ delivering"
        r"(, in each of \d+ workers)?\n)?"
        + stopped,
        out.decode(),
    ), out.decode()


def test_the_shipped_run_scripts_are_the_ones_install_writes_for_the_usual_paths():
    from qremote.daemon.service import log_script, run_script, systemd_unit

    scripts = pathlib.Path(__file__).parent.parent / "scripts"
    assert (scripts / "qremoted.run").read_text() == run_script("/var/qmail")
    assert (scripts / "qremoted-log.run").read_text() == log_script()
    assert (scripts / "qremoted.service").read_text() == systemd_unit()


def test_install_with_systemd_writes_a_unit_with_the_real_interpreter(qmail, tmp_path):
    unit = tmp_path / "qremoted.service"
    done = qremote(qmail, "install", "--user", "root", "--systemd", str(unit))
    assert done.returncode == 0, done.stderr
    text = unit.read_text()
    assert f"ExecStart={sys.executable} -m qremote.cli.qremote daemon\n" in text
    assert f"Environment=QMAILHOME={qmail}\n" in text
    assert "User=root\n" in text
    assert "systemctl daemon-reload && systemctl enable --now qremoted.service" in done.stdout


def test_install_builds_the_compiled_client_where_there_is_a_compiler(qmail):
    done = qremote(qmail, "install", "--user", "root")
    assert done.returncode == 0, done.stderr
    program = qmail / "bin" / "qmail-remote"
    assert program.read_bytes()[:4] == b"\x7fELF"
    assert "the compiled thin client (built with " in done.stdout
    assert MARKER in (qmail / "bin" / "qmail-remote.python").read_text()
    run = rspawn.run_args(str(program), str(qmail), [])  # usage comes from the Python path
    assert run.output == b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0"
    (qmail / "queue" / "lock" / "tcpto").write_bytes(b"\0" * 1024)
    check = qremote(qmail, "check", "--user", "root")
    assert "bin/qmail-remote is the compiled thin client" in check.stdout, check.stdout
    assert qremote(qmail, "uninstall").returncode == 0
    assert program.read_bytes() == FAKE_C_CLIENT
    assert not (qmail / "bin" / "qmail-remote.python").exists()


def asks_for_a_loader(path) -> bool:
    """Whether an ELF executable is linked dynamically: it has a PT_INTERP program header
    (the dynamic loader's path), which a static one lacks."""
    data = pathlib.Path(path).read_bytes()
    assert data[:5] == b"\x7fELF\x02" and data[5] == 1  # 64-bit, little-endian
    offset = int.from_bytes(data[0x20:0x28], "little")
    size, count = (int.from_bytes(data[i : i + 2], "little") for i in (0x36, 0x38))
    types = [int.from_bytes(data[offset + k * size :][:4], "little") for k in range(count)]
    return 3 in types  # PT_INTERP


def static_link_works(tmp_path) -> bool:
    """Whether this machine's compiler links a static position-independent program."""
    source = tmp_path / "probe.c"
    source.write_text("int main(void) { return 0; }\n")
    out = tmp_path / "probe"
    return subprocess.run(["cc", "-static-pie", "-o", str(out), str(source)]).returncode == 0


def test_the_thin_clients_are_linked_statically_where_the_c_library_allows(qmail, tmp_path):
    """No dynamic loader per delivery (less CPU and memory per client), where libc.a is."""
    static = static_link_works(tmp_path)
    done = qremote(qmail, "install", "--user", "root")
    assert done.returncode == 0, done.stderr
    assert ("linked statically" in done.stdout) is static, done.stdout
    for name in ("qmail-remote", "qremote-dkimverify"):
        assert asks_for_a_loader(qmail / "bin" / name) is not static, name


def test_a_client_that_cannot_be_linked_statically_is_linked_dynamically(qmail, tmp_path):
    """A C library without its static archive (glibc-static not installed) still gets
    the compiled client, linked as any program."""
    cc = tmp_path / "cc-without-libc.a"
    cc.write_text(
        '#!/bin/sh\ncase " $* " in *" -static-pie "*) echo "cannot find -lc" >&2; exit 1;; esac\n'
        'exec cc "$@"\n'
    )
    cc.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-m", "qremote.cli.qremote", "install", "--user", "root"],
        env={**os.environ, "QMAILHOME": str(qmail), "CC": str(cc)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"the compiled thin client (built with {cc}), " in done.stdout, done.stdout
    assert "linked statically" not in done.stdout
    assert asks_for_a_loader(qmail / "bin" / "qmail-remote")
    run = rspawn.run_args(str(qmail / "bin" / "qmail-remote"), str(qmail), [])
    assert run.output == b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0"


def test_install_without_a_compiler_installs_the_python_client_and_says_so(qmail):
    done = subprocess.run(
        [sys.executable, "-m", "qremote.cli.qremote", "install", "--user", "root"],
        env={**os.environ, "QMAILHOME": str(qmail), "CC": "/nonexistent/cc"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "the Python thin client (no C compiler (cc) on PATH)" in done.stdout
    assert MARKER in (qmail / "bin" / "qmail-remote").read_text()


def test_the_shipped_cron_file_is_the_one_install_writes_for_the_usual_paths(qmail, tmp_path):
    from qremote.daemon.service import DEFAULT_COMMAND, cron_jobs

    scripts = pathlib.Path(__file__).parent.parent / "scripts"
    assert (scripts / "qremote.cron").read_text() == cron_jobs()
    cron = tmp_path / "qremote.cron"
    done = qremote(qmail, "install", "--user", "root", "--cron", str(cron))
    assert done.returncode == 0, done.stderr
    text = cron.read_text()
    command = f"{sys.executable} -m qremote.cli.qremote"
    assert f"root QMAILHOME={qmail} {command} keys rotate >>" in text
    assert f"root QMAILHOME={qmail} {command} tlsrpt send >>" in text
    assert DEFAULT_COMMAND not in text


def test_every_path_a_shipped_file_names_is_one_the_installation_makes():
    """README installs into the virtualenv /opt/qremote (so /opt/qremote/bin/qremote
    exists) for the qmail home /var/qmail; nothing names a path nothing creates."""
    from qremote.daemon.service import DEFAULT_COMMAND

    made = {
        DEFAULT_COMMAND,  # README: /usr/bin/python3 -m venv /opt/qremote; pip install
        "/var/qmail",  # qmail's home
        "/var/log/qremote-rotate.log",  # cron appends, creating it
        "/var/log/qremote-tlsrpt.log",
        "/bin/kill",  # procps, on every Debian
        "/bin/sh",
        "/etc/service",  # Debian's daemontools-run makes it (named in a comment)
        "/etc/cron.d/qremote",  # where the cron file is copied (named in its comment)
    }
    scripts = pathlib.Path(__file__).parent.parent / "scripts"
    for name in (
        "qremoted.run",
        "qremoted-log.run",
        "qremoted.service",
        "qremote.cron",
        "qremote-verifyd.run",
        "qremote-verifyd.service",
    ):
        text = (scripts / name).read_text()
        for path in re.findall(r"(?<![\w.])/(?:opt|usr|var|bin|etc)/[\w./-]*\w", text):
            assert path in made, (name, path)


def test_install_puts_the_thin_filter_in_place_and_a_service_that_runs_verifyd(qmail, tmp_path):
    service = tmp_path / "supervise" / "qremote-verifyd"
    done = qremote(
        qmail, "install", "--user", "root", "--smtpd-user", "65534",
        "--verifyd-service", str(service),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    program = qmail / "bin" / "qremote-dkimverify"
    assert program.read_bytes()[:4] == b"\x7fELF"
    assert "qremote-dkimverify: the compiled filter (built with " in done.stdout
    assert MARKER in (qmail / "bin" / "qremote-dkimverify.python").read_text()
    folder = qmail / "qremote-verifyd"
    assert folder.stat().st_uid == 65534 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    run = (service / "run").read_text()
    assert run.endswith("verifyd --user 65534\n")
    # Run it as supervise would, and hand it a message through the installed filter.
    from qremote.verify import status
    from tests.support.queue import StandInQueue

    proc = subprocess.Popen(
        [str(service / "run")], cwd=service, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        ready = proc.stdout.readline().decode()
        assert f"serving {qmail}/qremote-verifyd/verifyd.sock" in ready, ready
        answer = status.ask(str(qmail))
        assert answer is not None and answer.uid == 65534
        queue = StandInQueue(str(tmp_path / "queue"))
        queue.command = [str(program)]
        q = queue.run(str(qmail), b"From: a@example.com\n\nhi\n", b"F\0\0")
        assert q.status == 0, q.log
        assert q.message == (
            b"Authentication-Results: me.example.org;\n\tdkim=none\nFrom: a@example.com\n\nhi\n"
        )
        assert "1 verified" in status.ask(str(qmail)).text
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_shipped_verifyd_files_are_the_ones_install_writes_for_the_usual_paths():
    from qremote.daemon.service import verifyd_run_script, verifyd_systemd_unit

    scripts = pathlib.Path(__file__).parent.parent / "scripts"
    assert (scripts / "qremote-verifyd.run").read_text() == verifyd_run_script("/var/qmail")
    assert (scripts / "qremote-verifyd.service").read_text() == verifyd_systemd_unit()
