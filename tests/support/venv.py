"""qremote installed as README says: a virtualenv of Debian's /usr/bin/python3 under a
folder the qmail users can read, ``pip install`` of this checkout without the test extra.

Made once per test run (pip fetches the runtime dependencies from the package index), so
the tests that use it see exactly what an administrator gets: if the package imports at
run time something it does not declare, those tests fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

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
        ignore=shutil.ignore_patterns(".git", "*.egg-info", "__pycache__", "build", ".*_cache"),
    )
    done = subprocess.run(
        [os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check", src],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install of qremote failed: {done.stderr[-2000:]}")
    shutil.rmtree(src)
    return venv


def remove(venv: str) -> None:
    shutil.rmtree(os.path.dirname(venv), ignore_errors=True)
