"""tcpto: qmail's own file layout and rules, shared with qmail-tcpto and qmail-tcpok."""

from __future__ import annotations

import os
import struct
import time

from qremote.tcpto import table
from qremote.tcpto.store import TcptoFiles
from tests.support.blackhole import Blackhole
from tests.support.smtpserver import ScriptedServer

MSG = b"Subject: t\n\nbody\n"


def read_v4(path: str) -> list[tuple[str, int, int]]:
    """Decode with qmail-tcpto's documented layout, independently of our code."""
    with open(path, "rb") as f:
        data = f.read()
    out = []
    for i in range(0, len(data), 16):
        rec = data[i : i + 16]
        ip = ".".join(str(b) for b in rec[0:4])
        (when,) = struct.unpack("<I", rec[8:12])
        if rec[4]:
            out.append((ip, rec[4], when))
    return out


def write_v4(path: str, slot: int, ip: str, count: int, when: int) -> None:
    rec = bytes(int(x) for x in ip.split(".")) + bytes([count]) + b"\0" * 3
    rec += struct.pack("<I", when) + b"\0" * 4
    with open(path, "r+b") as f:
        f.seek(slot * 16)
        f.write(rec)


# -- the rules, as pure functions -------------------------------------------------------


def test_skip_window_depends_on_the_pid():
    assert table.window(0) == 60 << 6
    assert table.window(31) == 91 << 6
    assert table.window(32) == 60 << 6
    addr = bytes([192, 0, 2, 1])
    recs = [table.Record(addr, 2, 10_000)]
    now = 10_000 + (60 << 6) + 5
    assert not table.should_skip(recs, addr, now, pid=0)  # window 3840 s has passed
    assert table.should_skip(recs, addr, now, pid=1)  # window 3904 s has not
    assert table.should_skip(recs, addr, 10_000 + 3839, pid=0)


def test_one_time_out_is_not_enough_to_skip():
    addr = bytes([192, 0, 2, 1])
    assert not table.should_skip([table.Record(addr, 1, 100)], addr, 101, pid=0)


def test_time_outs_count_up_to_ten_and_close_ones_are_ignored():
    addr = bytes([192, 0, 2, 1])
    recs = [table.Record(b"\0" * 4, 0, 0) for _ in range(64)]
    assert table.after_result(recs, addr, True, 1000) == 0
    assert recs[0] == table.Record(addr, 1, 1000)
    assert table.after_result(recs, addr, True, 1119) is None  # within 120 s
    assert table.after_result(recs, addr, True, 1120) == 0
    assert recs[0].count == 2
    for t in range(20):
        table.after_result(recs, addr, True, 2000 + 200 * t)
    assert recs[0].count == 10


def test_success_resets_a_known_address_and_ignores_unknown_ones():
    addr = bytes([192, 0, 2, 1])
    recs = [table.Record(addr, 5, 100), table.Record(b"\0" * 4, 0, 0)]
    assert table.after_result(recs, addr, False, 200) == 0
    assert recs[0].count == 0 and recs[0].when == 100
    assert table.after_result(recs, bytes([192, 0, 2, 9]), False, 200) is None


def test_full_table_replaces_the_least_valuable_record():
    recs = [table.Record(bytes([10, 0, 0, i]), 1, 5000 + i) for i in range(64)]
    recs[7] = table.Record(bytes([10, 0, 0, 7]), 3, 100)  # 100 + 3*1024 = 3172: smallest
    slot = table.after_result(recs, bytes([192, 0, 2, 1]), True, 9000)
    assert slot == 7 and recs[7] == table.Record(bytes([192, 0, 2, 1]), 1, 9000)


# -- the files ---------------------------------------------------------------------------


def test_record_bytes_are_qmails_layout(tmp_path):
    os.makedirs(tmp_path / "queue" / "lock")
    path = tmp_path / "queue" / "lock" / "tcpto"
    path.write_bytes(b"\0" * 1024)
    files = TcptoFiles(str(tmp_path))
    files.record("192.0.2.77", True, now=0x01020304)
    data = path.read_bytes()
    assert len(data) == 1024
    assert data[:16] == bytes([192, 0, 2, 77, 1, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0])
    assert data[16:] == b"\0" * (1024 - 16)


def test_missing_ipv4_file_means_tcpto_is_off_as_in_qmail(tmp_path):
    files = TcptoFiles(str(tmp_path))
    files.record("192.0.2.1", True)
    assert not os.path.exists(files.path("192.0.2.1"))
    assert not files.skip("192.0.2.1")


def test_ipv6_companion_file_is_created_with_the_same_rules(tmp_path):
    os.makedirs(tmp_path / "queue" / "lock")
    files = TcptoFiles(str(tmp_path))
    files.record("2001:db8::1", True, now=1000)
    files.record("2001:db8::1", True, now=1200)
    data = (tmp_path / "queue" / "lock" / "tcpto6").read_bytes()
    assert len(data) == 64 * 32
    assert data[:16] == bytes.fromhex("20010db8000000000000000000000001")
    assert data[16] == 2 and struct.unpack("<I", data[24:28])[0] == 1200
    assert files.skip("2001:db8::1", now=1300, pid=0)
    assert not files.skip("2001:db8::1", now=1200 + (60 << 6), pid=0)


def test_connect_time_out_is_recorded_in_qmails_file(home, zone):
    home.write("timeoutconnect", "1\n")
    with Blackhole() as dead:
        zone.mx("example.net", (10, "dead.example.net"))
        zone.a("dead.example.net", dead.ip)
        before = int(time.time())
        run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.output == b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0"
    [(ip, count, when)] = read_v4(home.tcpto)
    assert ip == dead.ip and count == 1 and before <= when <= time.time() + 1


def test_refused_connect_is_not_counted(home, zone):
    zone.mx("example.net", (10, "closed.example.net"))
    zone.a("closed.example.net", "127.3.251.1")
    home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert read_v4(home.tcpto) == []


def test_listed_host_is_skipped_without_a_connect(home, zone):
    with ScriptedServer() as skipped, ScriptedServer() as backup:
        write_v4(home.tcpto, 3, skipped.ip, 2, int(time.time()) - 100)
        zone.mx("example.net", (10, "a.example.net"), (20, "b.example.net"))
        zone.a("a.example.net", skipped.ip)
        zone.a("b.example.net", backup.ip)
        run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.reports[-1].startswith(b"K" + backup.ip.encode())
    assert skipped.connections == []


def test_expired_entry_is_tried_and_reset_on_success(home, zone):
    with ScriptedServer() as mx:
        write_v4(home.tcpto, 5, mx.ip, 4, int(time.time()) - (92 << 6))
        zone.mx("example.net", (10, "a.example.net"))
        zone.a("a.example.net", mx.ip)
        run = home.deliver("example.net", "a@example.org", ["b@example.net"], MSG)
    assert run.reports[-1].startswith(b"K")
    with open(home.tcpto, "rb") as f:
        f.seek(5 * 16)
        rec = f.read(16)
    assert rec[:4] == bytes(int(x) for x in mx.ip.split(".")) and rec[4] == 0
