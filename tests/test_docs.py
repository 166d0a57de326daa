"""What README.md, the demo and the shipped scripts say, held to what the code does."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_every_command_and_subcommand_is_in_the_commands_table():
    from qremote.cli.qremote import parser

    table = README[README.index("## Commands") : README.index("## Performance")]
    top = parser()
    for action in top._subparsers._group_actions:  # noqa: SLF001 - argparse's own structure
        for name, sub in action.choices.items():
            nested = [
                f"{name} {inner}"
                for a in (sub._subparsers._group_actions if sub._subparsers else [])  # noqa: SLF001
                for inner in a.choices
            ]
            for command in nested or [name]:
                assert f"`qremote {command}" in table, command


def test_the_venv_is_made_with_debians_own_python():
    assert "/usr/bin/python3 -m venv /opt/qremote" in README
    assert "\n   python3 -m venv" not in README


def test_the_demo_says_what_the_installed_mail_dkim_is():
    demo = (ROOT / "scripts" / "demo.py").read_text()
    assert "predates" not in demo and "Debian 12's does" not in demo
    assert "mail_dkim_version()" in demo and "does not implement Ed25519" in demo


def test_setup_installs_into_a_project_virtualenv_and_says_so():
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "--break-system-packages" not in setup
    assert ".venv/bin/pip install" in setup and "setup: installing into .venv/" in setup
    assert ".venv/bin/python" in (ROOT / "scripts" / "test").read_text()
    assert "project virtualenv `.venv/`" in README


def test_readme_says_which_tests_reach_the_package_index():
    assert re.search(r"package index \(PyPI\)", README)
    assert "tests/test_installed_package.py" in README and "tests/test_real_qmail.py" in README


def test_the_tcprules_example_says_local_clients_are_not_verified():
    section = README[README.index("## Verifying incoming mail") :]
    assert "127.:allow" in section or "127." in section
    assert "a trial from localhost shows no results" in section
