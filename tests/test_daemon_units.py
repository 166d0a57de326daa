"""The daemon's pure pieces fed plain data: the client-daemon frames, a conversation kept
open and reset for the next message, the pool's limits, who may connect."""

from __future__ import annotations

import asyncio
import copy
import os
import socket
import time

import pytest

from qremote.daemon import client, wire
from qremote.daemon.generations import control_signature
from qremote.daemon.listener import allowed
from qremote.daemon.server import Daemon, InFlight
from qremote.smtp.conversation import (
    Conversation,
    Envelope,
    Finished,
    Send,
    SendBody,
    Setup,
    Stale,
)
from qremote.smtp.pool import Limits, keepable
from qremote.smtp.replies import ReplyParser


def r(text: bytes):
    [reply] = ReplyParser().feed(text)
    return reply


# -- frames ----------------------------------------------------------------------------------


def test_a_request_carries_host_sender_and_recipients_separated_by_nul():
    data = wire.deliver_request([b"example.net", b"", b"a@example.net", b"b@example.net"])
    [(kind, payload)] = wire.FrameReader().feed(data)
    assert kind == wire.DELIVER
    assert wire.split_args(payload) == [b"example.net", b"", b"a@example.net", b"b@example.net"]


def test_frames_arrive_in_any_slicing():
    stream = wire.frame(wire.ACCEPTED) + wire.frame(wire.REPORT, b"r\0Kok\n\0")
    reader = wire.FrameReader()
    got = []
    for i in range(len(stream)):
        got += reader.feed(stream[i : i + 1])
        assert reader.pending == (i + 1 not in (5, len(stream)))  # frame boundaries
    assert got == [(wire.ACCEPTED, b""), (wire.REPORT, b"r\0Kok\n\0")]


@pytest.mark.parametrize(
    "data",
    [b"X\0\0\0\0", b"R\xff\xff\xff\xff", b"HTTP/1.1 200 OK\r\n"],
    ids=["unknown kind", "absurd length", "another protocol"],
)
def test_anything_else_is_a_wire_error(data):
    with pytest.raises(wire.WireError):
        wire.FrameReader().feed(data)


# -- who may connect -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, wait",
    [
        (b"20", 60.0),
        (b"0.5", 1.5),
        (b"", None),  # an older qremoted promises no heartbeat: wait as long as it takes
        (b"0", None),
        (b"-1", None),
        (b"nan", None),
        (b"inf", None),
        (b"twenty", None),
    ],
)
def test_after_accepting_the_client_allows_three_heartbeats_of_silence(payload, wait):
    assert client.stall_timeout(payload) == wait


def test_heartbeats_a_full_socket_cannot_take_are_skipped_and_the_stream_stays_whole(tmp_path):
    """A client that does not read (stopped) fills the socket: the delivery goes on, and
    once the client reads again it finds whole frames and the report last."""
    daemon_end, client_end = socket.socketpair()
    daemon_end.setblocking(False)
    filler = wire.frame(wire.TEXT, b"x" * 1000)
    while True:  # the client stops reading: fill its socket with whole frames
        try:
            daemon_end.send(filler)
        except BlockingIOError:
            break
    daemon = Daemon(str(tmp_path), heartbeat=0.01)
    job = InFlight(1, "example.net", "a@example.org", 1)

    async def slow_delivery() -> bytes:
        await asyncio.sleep(0.2)  # some twenty heartbeats, none of which fits
        return b"r\0Kok\n\0"

    async def run() -> None:
        out = await daemon._beating(daemon_end, job, slow_delivery())
        reader_side = asyncio.get_running_loop().run_in_executor(None, read_all)
        await daemon._send(daemon_end, job.owed + wire.frame(wire.REPORT, out))
        daemon_end.close()
        frames.extend(await reader_side)

    def read_all() -> list:
        reader, got = wire.FrameReader(), []
        while data := client_end.recv(1 << 16):
            got += reader.feed(data)
        assert not reader.pending
        return got

    frames: list = []
    asyncio.run(run())
    assert {kind for kind, _ in frames[:-1]} <= {wire.TEXT, wire.WORKING}
    assert frames[-1] == (wire.REPORT, b"r\0Kok\n\0")


def test_only_the_daemons_own_user_and_root_are_served():
    assert allowed(0, 1005)
    assert allowed(1005, 1005)
    assert not allowed(65534, 1005)


def test_the_control_signature_changes_on_edit_replace_add_and_remove(tmp_path):
    (tmp_path / "me").write_text("a\n")
    first = control_signature(str(tmp_path))
    (tmp_path / "me").write_text("ab\n")
    edited = control_signature(str(tmp_path))
    (tmp_path / "new").write_text("ab\n")
    (tmp_path / "new").rename(tmp_path / "me")
    replaced = control_signature(str(tmp_path))
    (tmp_path / "helohost").write_text("x\n")
    added = control_signature(str(tmp_path))
    (tmp_path / "helohost").unlink()
    assert len({first, edited, replaced, added}) == 4
    assert control_signature(str(tmp_path)) == replaced
    assert control_signature(str(tmp_path / "missing")) == ()


# -- a conversation kept open ----------------------------------------------------------------


def kept_open() -> Conversation:
    """A conversation that has just sent its first message's dot."""
    envelope = Envelope("me.example", b"a@x", [b"b@y"])
    c = Conversation("192.0.2.1", envelope, Setup(keep_open=True))
    c.receive(r(b"220 hi\r\n"))
    c.receive(r(b"250-mx\r\n250 PIPELINING\r\n"))
    c.receive(r(b"250 ok\r\n"))
    c.receive(r(b"250 ok\r\n"))
    assert c.receive(r(b"354 go\r\n")) == [SendBody()]
    c.dot_sending()
    return c


def test_kept_open_the_answer_to_the_dot_is_reported_without_quit():
    c = kept_open()
    assert c.receive(r(b"250 queued\r\n")) == [
        Finished(b"K192.0.2.1 accepted message.\nRemote host said: 250 queued\n", open=True)
    ]


def test_a_refused_message_also_leaves_the_connection_usable():
    [fin] = kept_open().receive(r(b"554 spam\r\n"))
    assert fin.open and fin.report.startswith(b"D192.0.2.1 failed after I sent the message.")


def test_421_after_the_dot_means_the_server_is_closing_so_quit():
    acts = kept_open().receive(r(b"421 bye\r\n"))
    assert acts[0] == Send(b"QUIT\r\n")
    assert not acts[1].open and acts[1].report.startswith(b"Z")


def test_the_next_message_starts_with_rset_alone_then_the_pipelined_envelope():
    c = kept_open()
    c.receive(r(b"250 queued\r\n"))
    assert c.reset(Envelope("me.example", b"c@x", [b"d@y"])) == [Send(b"RSET\r\n")]
    assert c.receive(r(b"250 reset\r\n")) == [Send(b"MAIL FROM:<c@x>\r\nRCPT TO:<d@y>\r\nDATA\r\n")]
    assert not c.critical


def test_a_connection_that_refuses_rset_is_stale():
    c = kept_open()
    c.receive(r(b"250 queued\r\n"))
    c.reset(Envelope("me.example", b"c@x", [b"d@y"]))
    assert c.receive(r(b"421 idle too long\r\n")) == [Send(b"QUIT\r\n"), Stale()]


# -- pool limits -----------------------------------------------------------------------------


def test_a_connection_is_kept_while_under_its_message_and_age_limits():
    limits = Limits(idle=5, messages=3, age=60)
    assert keepable(limits, messages=2, age=59)
    assert not keepable(limits, messages=3, age=1)
    assert not keepable(limits, messages=1, age=60)
    assert not keepable(Limits(idle=0, messages=100, age=300), messages=1, age=0)


# -- workers asking each other for a slot -------------------------------------------------


def _workers_keeping(idle: dict[int, list[str]]) -> tuple[list, list, list]:
    """Siblings as the forked workers have them, each keeping idle connections of the
    groups listed for it; who was asked for what, and who closed what, in order."""
    from qremote.daemon.siblings import Siblings

    master = Siblings(len(idle))
    asked: list[tuple[int, str]] = []
    closed: list[tuple[int, str]] = []
    workers = []
    for index, groups in idle.items():

        def free_one(group: str, index: int = index, groups: list[str] = groups) -> bool:
            asked.append((index, group))
            if group not in groups:
                return False
            groups.remove(group)
            closed.append((index, group))
            return True

        worker = copy.copy(master)  # a forked copy of the master's channels
        worker.listen(index, free_one)
        workers.append(worker)
    return workers, asked, closed


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


def test_a_request_goes_round_the_siblings_until_one_closes_an_idle_connection():
    async def scene() -> list[tuple[int, str]]:
        workers, asked, closed = _workers_keeping({0: ["g"], 1: [], 2: ["h"], 3: ["g"], 4: ["g"]})
        assert workers[1].want("g")  # worker 2 keeps none of g: worker 3 closes one
        await _settle()
        assert asked == [(2, "g"), (3, "g")]
        return closed

    assert asyncio.run(scene()) == [(3, "g")]  # one connection for one waiter, not three


def test_a_request_nobody_can_serve_stops_after_every_sibling_was_asked_once():
    async def scene() -> list[tuple[int, str]]:
        workers, asked, closed = _workers_keeping({0: ["g"], 1: ["h"], 2: []})
        assert workers[0].want("x")
        await _settle()
        assert asked == [(1, "x"), (2, "x")]  # and not again, nor the asking worker itself
        assert workers[2].want("g")  # asks 0 first (wrapping round), which keeps one
        await _settle()
        return closed

    assert asyncio.run(scene()) == [(0, "g")]


def test_a_request_to_a_sibling_too_busy_to_read_is_dropped_not_waited_for():
    from qremote.daemon.siblings import Siblings

    siblings = Siblings(2)
    siblings.index = 0
    sent = [siblings.want("g" * 1000) for _ in range(10_000)]  # nobody reads worker 1's channel
    assert sent[0] and not sent[-1]  # the channel filled up; want() never blocked
    assert not siblings.want("x" * 70_000)  # a name longer than NAME_MAX is not sent
    alone = Siblings(1)
    alone.index = 0
    assert not alone.want("g")  # a single worker has nobody to ask


# -- control files seen again -----------------------------------------------------------


def test_a_control_file_replaced_is_seen_at_once_one_edited_in_place_within_recheck(
    tmp_path, monkeypatch
):
    from qremote.daemon import generations
    from tests.support import qmailhome

    home = qmailhome.make(str(tmp_path / "qmail"), "127.0.0.1")
    home.write("helohost", "one.example.org\n")
    helohost = os.path.join(home.control, "helohost")
    cache = generations.SettingsCache(home.path)

    def in_place(text: str) -> None:
        with open(helohost, "w") as f:  # the same inode: the folder does not change
            f.write(text)

    async def scene() -> list[str]:
        seen = [cache.get().settings.helo]
        os.rename(home.write("helohost.new", "two.example.org\n"), helohost)  # as editors do
        seen.append(cache.get().settings.helo)
        in_place("three.example.org\n")
        seen.append(cache.get().settings.helo)  # the folder changed just now: not trusted
        long_ago = time.time() - 3600
        os.utime(home.control, (long_ago, long_ago))
        cache.get()
        in_place("four.example.org\n")
        seen.append(cache.get().settings.helo)  # the folder is unchanged: not looked at yet
        monkeypatch.setattr(generations, "RECHECK", 0.0)  # as a second later
        seen.append(cache.get().settings.helo)
        await cache.close()
        return seen

    assert asyncio.run(scene()) == [
        "one.example.org",
        "two.example.org",
        "three.example.org",
        "three.example.org",
        "four.example.org",
    ]
