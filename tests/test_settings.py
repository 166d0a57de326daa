"""qremote/settings.py's table knows every control file the code reads, drives how a
delivery reads them (parsers and defaults once), and README's table is held to it."""

from __future__ import annotations

import dataclasses
import pathlib
import re

import pytest

from qremote.control import ControlError
from qremote.settings import (
    BY_NAME,
    CONTROL_FILES,
    DaneMode,
    HeaderMode,
    Settings,
    load_settings,
)
from qremote.signing.sign import SignConfig
from qremote.smtp.pool import Limits

PACKAGE = pathlib.Path(__file__).parent.parent / "qremote"
READ = re.compile(r"""\.(?:line|lines|integer|listing|mapping)\(\s*["']([a-z0-9_.]+)["']""")
TABLE_READ = re.compile(r"""integer\(control, ["']([a-z0-9_.]+)["']\)""")


def test_every_control_file_read_anywhere_is_in_the_table():
    read = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        read |= set(READ.findall(text)) | set(TABLE_READ.findall(text))
    assert read, "the pattern found nothing: it no longer matches how files are read"
    assert sorted(read - set(BY_NAME)) == []


def test_the_table_names_each_file_once_with_a_reader_and_a_meaning():
    names = [f.name for f in CONTROL_FILES]
    assert len(names) == len(set(names))
    assert all(f.readers and f.what for f in CONTROL_FILES)
    assert all(isinstance(f.default, int) for f in CONTROL_FILES if f.kind == "integer")


def test_each_setting_is_filled_by_one_entry_of_the_table_with_its_parser():
    fields = [f.name for f in dataclasses.fields(Settings) if f.name not in ("home", "control")]
    filled = [f.setting for f in CONTROL_FILES if f.setting is not None]
    assert sorted(filled) == sorted(fields)
    assert all(f.parse is not None for f in CONTROL_FILES if f.setting is not None)


def test_missing_files_are_the_tables_defaults(tmp_path):
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "me").write_text("mx.example.org\n")
    settings = load_settings(str(tmp_path))
    assert settings.helo == "mx.example.org"
    assert (settings.timeout_connect, settings.timeout_remote) == (60, 1200)
    assert settings.reuse == Limits(idle=5, messages=100, age=300)
    assert (settings.group_wait, settings.shared_lease, settings.shared_state) == (60, 60, None)
    assert settings.dane is DaneMode.ON and settings.utf8_headers is HeaderMode.SEND
    assert settings.mta_sts is True
    assert settings.tlsrpt_contact == "postmaster@mx.example.org"
    # the signer's own defaults (tests, benchmarks) are what the files' defaults make
    # (the authserv-id is not a signing default: it is control/me's, as the filter's)
    assert settings.signing == dataclasses.replace(SignConfig(), authserv_id="mx.example.org")


@pytest.mark.parametrize(
    "name,value,said",
    [
        ("dane", "maybe", "control/dane: 'maybe' is not on, off or first"),
        ("utf8headers", "drop", "control/utf8headers: 'drop' is not bounce or send"),
        ("mtasts", "yes", "control/mtasts: 'yes' is not on or off"),
    ],
)
def test_a_mode_file_with_another_word_names_the_file_and_the_words(tmp_path, name, value, said):
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "me").write_text("mx.example.org\n")
    (tmp_path / "control" / name).write_text(value + "\n")
    with pytest.raises(ControlError) as e:
        load_settings(str(tmp_path))
    assert str(e.value) == said


def test_modes_are_read_in_any_case_into_their_enums(tmp_path):
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "me").write_text("mx.example.org\n")
    (tmp_path / "control" / "dane").write_text("First\n")
    (tmp_path / "control" / "utf8headers").write_text("BOUNCE\n")
    (tmp_path / "control" / "mtasts").write_text("off\n")
    settings = load_settings(str(tmp_path))
    assert settings.dane is DaneMode.FIRST and settings.utf8_headers is HeaderMode.BOUNCE
    assert settings.mta_sts is False


def test_readmes_control_file_table_names_every_file_and_its_default():
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme[readme.index("### Control files") :]
    table = table[: table.index("\n### ")]
    rows = {}
    for line in table.splitlines():
        if line.startswith("| `"):
            names, meaning = line.split(" | ", 1)
            for name in re.findall(r"`([a-z0-9_.]+)", names):
                rows[name] = meaning
    missing = [f.name for f in CONTROL_FILES if f.name not in rows]
    assert missing == []
    wrong = [
        f.name
        for f in CONTROL_FILES
        if isinstance(f.default, (int, str))
        and not isinstance(f.default, bool)
        and f.default not in (".",)
        and str(f.default) not in rows[f.name]
    ]
    assert wrong == []
