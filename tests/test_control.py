"""qremote/control.py: control files read by qmail's rules."""

from __future__ import annotations

import pytest

from qremote.control import ControlDir, ControlError, parse_map


def test_control_rules(tmp_path):
    (tmp_path / "me").write_text("host.example  \nsecond\n")
    (tmp_path / "timeoutremote").write_text("30\n")
    (tmp_path / "timeoutconnect").write_text("soon\n")
    (tmp_path / "locals").write_text("# c\n\na\n b\n")
    c = ControlDir(str(tmp_path))
    assert c.line("me") == "host.example"
    assert c.line("missing") is None
    assert c.integer("timeoutremote", 1200) == 30
    assert c.integer("missing", 7) == 7
    with pytest.raises(ControlError, match="timeoutconnect"):
        c.integer("timeoutconnect", 60)
    assert c.listing("locals") == ["a", " b"]


def test_map_is_case_insensitive_and_later_lines_win():
    assert parse_map(["Example.COM:a", "example.com:b", "x"]) == {"example.com": "b", "x": ""}
