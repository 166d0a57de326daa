"""qremote installed as README says: a virtualenv of Debian's /usr/bin/python3 under a
folder the qmail users can read, ``pip install`` of this checkout without the test extra.

Made once per test module (pip fetches the runtime dependencies from the package index,
PyPI: the one thing the tests reach beyond loopback), so the tests that use it see
exactly what an administrator gets: if the package imports at run time something it does
not declare, those tests fail. When the index cannot be reached, :func:`installed` says so
clearly: a skip on a developer's machine, a failure in CI (which must run them). A
failed install leaves nothing behind in /tmp.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEM_PYTHON = "/usr/bin/python3"


def make() -> str:
    """A new virtualenv with qremote installed; its folder (``bin/qremote`` inside)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise RuntimeError(f"{SYSTEM_PYTHON} is missing: README's installation needs it")
    top = tempfile.mkdtemp(prefix="qremote-venv-", dir="/tmp")
    os.chmod(top, 0o755)  # qmailr and qmaild run what is in it
    venv = os.path.join(top, "qremote")
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", venv], check=True, capture_output=True)
    # A copy of the checkout: pip builds in it, and the tree under test stays untouched.
    src = os.path.join(top, "src")
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "*.egg-info", "__pycache__", "build", ".*_cache"
        ),
    )
    done = subprocess.run(
        [os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check", src],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"},
    )
    if done.returncode != 0:
        shutil.rmtree(top, ignore_errors=True)
        if any(sign in done.stderr for sign in UNREACHABLE):
            raise IndexUnreachable(
                "the package index (PyPI) cannot be reached, so qremote cannot be installed "
                f"into a virtualenv as README says: {done.stderr.strip()[-300:]}"
            )
        raise RuntimeError(f"pip install of qremote failed: {done.stderr[-2000:]}")
    shutil.rmtree(src)
    return venv


UNREACHABLE = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No matching distribution found",
    "Could not find a version that satisfies",
    "ConnectionError",
    "ReadTimeoutError",
)
"""What pip says when it cannot reach the index (or the index has nothing for it)."""


class IndexUnreachable(RuntimeError):
    """The package index cannot be reached: the installation cannot be tested here."""


def installed() -> Iterator[str]:
    """A pytest fixture body: a fresh installation for a module, removed afterwards."""
    import pytest

    try:
        path = make()
    except IndexUnreachable as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the installed package: {e}")
        pytest.skip(str(e))
    try:
        yield path
    finally:
        remove(path)


def remove(venv: str) -> None:
    shutil.rmtree(os.path.dirname(venv), ignore_errors=True)
