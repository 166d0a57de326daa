"""qremote/settings.py's table knows every control file the code reads."""

from __future__ import annotations

import pathlib
import re

from qremote.settings import BY_NAME, CONTROL_FILES

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
