"""Traffic shaping (control/shaping.toml, KumoMTA's format): rates per group and source,
automation rules that suspend a path or lower its rate when a provider's reply says so,
the stepwise return, ``qremote status`` and ``qremote shaping resume``, and check.

The rules alone are tested with their clock given; the deliveries against scripted
servers answering with Gmail's, Yahoo's and Outlook's own words."""

from __future__ import annotations

import re
import time

import pytest

from qremote.groups.rules import Group
from qremote.limits import SHAPING_MATCH_CHARS
from qremote.shaping import config, rates
from qremote.shaping.automation import react
from qremote.shaping.config import Rate, parse, parse_duration, parse_rate, path_for
from tests.support.smtpserver import Script, ScriptedServer

GMAIL = (
    "421-4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail\r\n"
    "421 4.7.28 originating from your IP address. To protect our users from spam, mail sent"
    " from your IP address has been temporarily rate limited."
)
YAHOO = "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume"
OUTLOOK = "451 4.7.500 Server busy. Please try again later from [127.0.0.1]. (S77714)"

RULES = """
["default"]
max_message_rate = "1000/s"

[provider."google"]
match = [{MXSuffix = ".google.example"}]
connection_limit = 3

[[provider."google".automation]]
regex = "unusual rate of\\\\s+unsolicited mail"
action = "Suspend"
duration = "1h"

[provider."yahoo"]
match = [{MXSuffix = ".yahoodns.example"}]

[[provider."yahoo".automation]]
regex = ["\\\\[TSS04\\\\]", "\\\\[TS03\\\\]"]
action = {SetConfig = {name = "max_message_rate", value = "1/h"}}
duration = "30 minutes"

[provider."outlook"]
match = [{MXSuffix = ".outlook.example"}]

[[provider."outlook".automation]]
regex = "Server busy\\\\. Please try again later"
action = "Suspend"
duration = 600
trigger = {Threshold = "2/h"}

["slow.example"]
max_message_rate = "2/min"
"""


def rules():
    import tomllib

    shaping, problems = parse(tomllib.loads(RULES))
    assert problems == []
    return shaping


# --- the file ---------------------------------------------------------------------------


def test_rates_and_durations_read_as_kumomta_writes_them():
    assert parse_rate("10/min") == Rate(10, 60, "10/min")
    assert parse_rate("1000/day").interval == 86.4
    assert parse_rate("2/s").interval == 0.5
    assert parse_duration("30 minutes") == 1800
    assert parse_duration("1h") == parse_duration(3600) == 3600
    for bad in ("10", "ten/min", "10/fortnight", "0/s"):
        with pytest.raises(ValueError):
            parse_rate(bad)
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_a_provider_is_one_group_whatever_domain_it_hosts():
    shaping = rules()
    for domain in ("gmail.example", "customer.example"):
        path = path_for(shaping, domain, ["alt1.aspmx.google.example."], "mx:whatever")
        assert (path.group, path.provider) == ("google", True)
        assert path.config.max_message_rate == parse_rate("1000/s")  # from ["default"]
    plain = path_for(shaping, "slow.example", ["mx.slow.example"], "mx:mx.slow.example")
    assert (plain.group, plain.provider) == ("mx:mx.slow.example", False)
    assert plain.config.max_message_rate == parse_rate("2/min")  # the domain's own wins


def test_connection_limit_is_the_mx_groups_cap():
    shaping = rules()
    google = path_for(shaping, "gmail.example", ["mx.google.example"], "mx:mx.google.example")
    mx_group = Group("mx:mx.google.example", 20)
    assert config.group(google, mx_group, False, 20) == Group("google", 3)
    # a named control/mxgroups rule was written for this: it wins
    assert config.group(google, Group("bulk", 50), True, 20) == Group("bulk", 50)
    plain = path_for(shaping, "other.example", ["mx.other.example"], "mx:mx.other.example")
    assert config.group(plain, Group("mx:mx.other.example", 20), False, 20).limit == 20


def test_keys_and_actions_qremote_does_not_apply_are_named_never_silently_dropped():
    import tomllib

    text = """
["default"]
enable_tls = "Required"
max_mesage_rate = "10/s"
max_message_rate = "fast"

[provider."x"]
match = [{MXSuffix = ".x.example"}, {Regex = ".*"}]

[[provider."x".automation]]
regex = "busy"
action = ["Suspend", "Bounce", {SetConfig = {name = "connection_limit", value = 1}}]
duration = "1h"

[[provider."x".automation]]
regex = "("
action = "Suspend"
duration = "1h"
"""
    shaping, problems = parse(tomllib.loads(text))
    assert problems == [
        '["default"]: enable_tls is not applied by qremote (yet)',
        '["default"]: max_mesage_rate is not a shaping key qremote knows',
        "[\"default\"]: max_message_rate: 'fast' is not a rate like 10/min (s, min, h, day);"
        " not applied",
        "[provider.\"x\"]: match entry {'Regex': '.*'} is not MXSuffix, MXRollup or HostName",
        '[provider."x"] automation 1: action Bounce is not applied by qremote',
        '[provider."x"] automation 1: SetConfig of connection_limit is not applied by qremote',
        '[provider."x"] automation 2: regex: missing ), unterminated subpattern at position 0;'
        " not applied",
    ]
    [provider] = shaping.providers
    [rule] = provider.config.automation  # the one that could be read, with what it can do
    assert [a.kind for a in rule.actions] == ["suspend"]


# --- rates and automation, the clock given -------------------------------------------


def test_gcra_spaces_messages_evenly_and_refuses_past_the_wait():
    rate = parse_rate("10/min")  # one every 6 s
    first = rates.admit(0.0, 1000.0, rate, 5)
    assert first == rates.Admitted(1006.0, 0.0)
    second = rates.admit(first.tat, 1001.0, rate, 5)
    assert second == rates.Admitted(1012.0, 5.0)  # waits its turn
    third = rates.admit(second.tat, 1001.0, rate, 5)
    assert third == rates.Refused(11.0)  # 11 s away: Z now, nothing reserved
    assert rates.admit(second.tat, 1012.0, rate, 5) == rates.Admitted(1018.0, 0.0)


def test_a_lowered_rate_comes_back_in_steps_after_its_duration():
    normal = parse_rate("60/min")
    low = rates.Lowered(parse_rate("2/min"), since=0.0, until=1800.0, text=YAHOO)
    assert rates.current(normal, low, 1799.0) == parse_rate("2/min")
    seen = [rates.current(normal, low, 1800.0 + n * rates.RECOVERY_STEP) for n in range(6)]
    assert [r.text for r in seen if r] == ["4/min", "8/min", "16/min", "32/min", "60/min", "60/min"]
    assert rates.recovered(normal, low, 1800.0 + 4 * rates.RECOVERY_STEP)
    assert not rates.recovered(normal, low, 1800.0 + 3 * rates.RECOVERY_STEP)
    # without a configured rate the path is unlimited again after the last step
    assert rates.current(None, low, 1800.0 + 5 * rates.RECOVERY_STEP) is None


def test_a_threshold_counts_matches_within_its_period_before_acting():
    [outlook] = [p for p in rules().providers if p.name == "outlook"]
    rule_set = outlook.config.automation
    effect, seen = react(rule_set, OUTLOOK, 0.0, {})
    assert effect is None and len(next(iter(seen.values()))) == 1
    effect, seen = react(rule_set, OUTLOOK, 4000.0, seen)  # the first is over an hour old
    assert effect is None
    effect, seen = react(rule_set, OUTLOOK, 4100.0, seen)
    assert effect is not None and effect.suspend_for == 600 and seen == {}
    assert react(rule_set, "550 5.1.1 no such user", 4200.0, {})[0] is None


def test_rules_read_only_the_first_2_kb_of_a_reply():
    """A hostile server's 64 KB reply costs a rule no more than its first 2 KB."""
    [outlook] = [p for p in rules().providers if p.name == "outlook"]
    rule_set = outlook.config.automation
    padding = "451-4.7.500 " + "x" * 60 + "\r\n"
    early = padding * 10 + OUTLOOK
    late = padding * (SHAPING_MATCH_CHARS // len(padding) + 1) + OUTLOOK
    assert len(early) < SHAPING_MATCH_CHARS < len(late) - len(OUTLOOK)
    assert rule_set[0].matches(early)
    assert not rule_set[0].matches(late)


# --- deliveries --------------------------------------------------------------------------

MSG = b"From: a@example.org\nTo: b@gmail.example\nSubject: s\n\nbody\n"


def setup(home, zone, mx, domain: str, host: str, text: str = RULES) -> None:
    zone.mx(domain, (10, host))
    zone.a(host, mx.ip)
    home.write("shaping.toml", text)


def send(home, domain: str = "gmail.example"):
    return home.deliver(domain, "a@example.org", [f"b@{domain}"], MSG)


def test_a_rate_is_kept_by_waiting_or_by_an_immediate_z(home, zone):
    text = '["slow.example"]\nmax_message_rate = "2/s"\n'
    with ScriptedServer() as mx:
        setup(home, zone, mx, "slow.example", "mx.slow.example", text)
        runs = [send(home, "slow.example") for _ in range(3)]
        assert [r.qmail[:1] for r in runs] == [b"K", b"K", b"K"]
        arrived = [c for c in mx.connections]
        home.write("shaping.toml", '["slow.example"]\nmax_message_rate = "1/h"\n')
        home.write("shapingwait", "1\n")
        first, second = send(home, "slow.example"), send(home, "slow.example")
    assert len(arrived) == 3
    assert first.qmail.startswith(b"K")
    assert second.qmail == (
        b"ZRate limit of 1/h for the mx:mx.slow.example group from default reached"
        b" (control/shaping.toml); the next message may go in 3600 s, and qmail will retry."
        b" (#4.4.5)\n"
    )
    assert len(mx.connections) == 4  # the refused one never connected


def test_the_rate_holds_at_the_sink(home, zone):
    """Five messages at 4/s, one after another: never two within a quarter second."""
    stamps: list[float] = []
    with ScriptedServer() as mx:
        setup(home, zone, mx, "slow.example", "mx.slow.example",
              '["slow.example"]\nmax_message_rate = "4/s"\n')  # fmt: skip
        for _ in range(5):
            run = send(home, "slow.example")
            assert run.qmail.startswith(b"K")
            stamps.append(time.time())
    # each delivery reserved its turn 0.25 s after the previous one's
    assert all(b - a >= 0.24 for a, b in zip(stamps, stamps[1:], strict=False))


def test_gmails_rate_limit_reply_suspends_the_group_until_resumed(home, zone):
    script = Script(rcpt=GMAIL)
    with ScriptedServer(script) as mx:
        setup(home, zone, mx, "gmail.example", "alt1.gmail-smtp-in.l.google.example")
        first = send(home)
        assert first.output.startswith(b"h") or first.qmail.startswith(b"Z")
        assert "Shaping: the google group from default is suspended for 3600 s" in (
            first.reports[-1].decode()
        )
        connected = len(mx.connections)
        second = send(home)
        assert len(mx.connections) == connected  # answered without connecting
        said = second.qmail.decode()
        assert said.startswith("ZDeliveries to the google group from default are suspended until ")
        assert "because it said: 421-4.7.28 [127.0.0.1] Our system has detected" in said
        assert said.endswith("qmail will retry. (#4.4.5)\n")
        status = home.qremote("status").stdout
        assert re.search(r"google from default: suspended since .* UTC until .* UTC; it said: "
                         r"421-4\.7\.28", status)  # fmt: skip
        lifted = home.qremote("shaping", "resume", "google")
        assert lifted.returncode == 0 and "resumed on 1 path" in lifted.stdout
        assert "(no path is suspended or slowed)" in home.qremote("shaping").stdout
        mx.script.rcpt = None
        third = send(home)
    assert third.qmail.startswith(b"K")


def test_yahoos_deferral_lowers_the_rate_with_a_note(home, zone):
    with ScriptedServer(Script(rcpt=YAHOO)) as mx:
        setup(home, zone, mx, "yahoo.example", "mta5.am0.yahoodns.example")
        first = send(home, "yahoo.example")
        assert "Shaping: the yahoo group from default is held to 1/h for 1800 s" in (
            first.reports[-1].decode()
        )
        mx.script.rcpt = None
        again = send(home, "yahoo.example")  # the first message at the lowered rate goes
        then = send(home, "yahoo.example")
    assert again.qmail.startswith(b"K")
    assert then.qmail.startswith(b"ZRate limit of 1/h for the yahoo group from default")
    assert "yahoo from default: held to 1/h since" in home.qremote("status").stdout


def test_outlooks_busy_reply_suspends_only_after_its_threshold(home, zone):
    with ScriptedServer(Script(greeting=OUTLOOK)) as mx:
        setup(home, zone, mx, "outlook.example", "mx1.mail.protection.outlook.example")
        first = send(home, "outlook.example")
        assert "Shaping" not in first.output.decode()
        second = send(home, "outlook.example")
        assert "is suspended for 600 s" in second.output.decode()
        connected = len(mx.connections)
        third = send(home, "outlook.example")
    assert third.qmail.startswith(b"ZDeliveries to the outlook group")
    assert len(mx.connections) == connected


def test_a_broken_file_shapes_nothing_stops_nothing_and_says_so(home, zone):
    with ScriptedServer() as mx:
        setup(home, zone, mx, "gmail.example", "mx.google.example", "[default\nbroken")
        run = send(home)
    assert run.qmail.startswith(b"K")
    assert "control/shaping.toml: " in run.output.decode()
    assert "no shaping applied." in run.output.decode()
    found = home.qremote("check", "--user", "root").stdout
    assert "control/shaping.toml: " in found and "no shaping applies until it is fixed" in found


# --- the rules qremote ships --------------------------------------------------------------

PROVIDER_WORDS = {
    "google": [GMAIL],
    "yahoo": [YAHOO, "421 4.7.0 [TSS09] All messages from 192.0.2.1 will be permanently deferred",
              "421 4.7.0 [GL01] Message from (192.0.2.1) temporarily deferred"],
    "outlook": [OUTLOOK, "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate"
                " limited due to IP reputation.",
                "421 4.3.2 The maximum number of concurrent connections has been exceeded"
                " -- exceeded the maximum number of connections"],
    "apple": ["450 4.7.1 Error: too much mail from 192.0.2.1",
              "421 4.7.0 Error: too many connections from 192.0.2.1"],
}  # fmt: skip


def test_the_shipped_rules_read_cleanly_and_match_each_providers_words(home):
    import tomllib

    printed = home.qremote("shaping", "defaults").stdout
    shaping, problems = parse(tomllib.loads(printed))
    assert problems == []
    by_name = {p.name: p for p in shaping.providers}
    assert set(by_name) == set(PROVIDER_WORDS)
    for name, words in PROVIDER_WORDS.items():
        provider = by_name[name]
        for text in words:
            assert any(r.matches(text) for r in provider.config.automation), (name, text)
        assert not any(
            r.matches("550 5.1.1 <b@x> user unknown") for r in provider.config.automation
        )
    assert path_for(shaping, "gmail.com", ["gmail-smtp-in.l.google.com"], "x").group == "google"
    assert path_for(shaping, "aol.com", ["mx-aol.mail.gm0.yahoodns.net"], "x").group == "yahoo"
    assert (
        path_for(shaping, "hotmail.com", ["hotmail-com.olc.protection.outlook.com"], "x").group
        == "outlook"
    )
    assert path_for(shaping, "me.com", ["mx01.mail.icloud.com"], "x").group == "apple"


def test_a_deferral_by_shaping_is_counted_per_group_and_reason():
    from qremote.metrics.counts import Counts
    from qremote.metrics.trace import Trace

    counts = Counts()
    counts.delivered(Trace(group="google", shaped="suspended"), "Z", "", 0.0)
    counts.delivered(Trace(group="mx:mx.slow.example", shaped="rate"), "Z", "", 0.0)
    assert counts.get("shaping_deferrals", ("google", "suspended")) == 1
    assert counts.get("shaping_deferrals", ("other", "rate")) == 1


def test_qremoted_and_a_standalone_qmail_remote_share_one_suspension_and_one_rate(home, zone):
    """What qremoted's delivery learns holds for the in-process path, and the reverse."""
    from tests.support.daemon import Qremoted
    from tests.support.waiting import wait_until

    text = RULES + '\n["rate.example"]\nmax_message_rate = "1/h"\n'
    with ScriptedServer(Script(rcpt=GMAIL)) as mx, Qremoted(home) as daemon:
        setup(home, zone, mx, "gmail.example", "alt1.gmail-smtp-in.l.google.example", text)
        zone.mx("rate.example", (10, "mx.rate.example"))
        zone.a("mx.rate.example", mx.ip)
        through_daemon = send(home)
        assert "is suspended for 3600 s" in through_daemon.output.decode()
        # qremoted made that delivery (its log line follows the answer to the client)
        wait_until(lambda: "is suspended for 3600 s" in daemon.log())
        alone = home.deliver_standalone("gmail.example", "a@example.org", ["b@gmail.example"], MSG)
        assert alone.qmail.startswith(b"ZDeliveries to the google group from default")
        mx.script.rcpt = None
        first = home.deliver_standalone("rate.example", "a@example.org", ["b@rate.example"], MSG)
        second = home.deliver("rate.example", "a@example.org", ["b@rate.example"], MSG)
    assert first.qmail.startswith(b"K")
    assert second.qmail.startswith(b"ZRate limit of 1/h for the mx:mx.rate.example group")


# --- a fleet: two qmail homes sharing one Redis -----------------------------------------


@pytest.fixture
def fleet(home, dns_server, tmp_path):
    """Two qmail homes (two hosts) with control/sharedstate naming one real Redis."""
    from tests.support import qmailhome
    from tests.support.redisserver import RedisServer

    other = qmailhome.make(str(tmp_path / "second-host"), dns_server.address)
    with RedisServer() as redis:
        for h in (home, other):
            h.write("sharedstate", redis.url + "\n")
        yield home, other, redis


def test_a_suspension_one_host_learns_holds_for_the_other(fleet, zone):
    one, two, redis = fleet
    with ScriptedServer(Script(rcpt=GMAIL)) as mx:
        for h in (one, two):
            setup(h, zone, mx, "gmail.example", "alt1.gmail-smtp-in.l.google.example")
        first = send(one)
        assert "is suspended for 3600 s" in first.output.decode()
        connected = len(mx.connections)
        second = send(two)
        assert second.qmail.startswith(b"ZDeliveries to the google group from default")
        assert len(mx.connections) == connected
        shown = two.qremote("shaping").stdout
        assert f"Shaping, shared ({redis.url}):" in shown
        assert "google from default: suspended since" in shown.split("Shaping, shared")[1]
        assert "resumed on 1 path" in two.qremote("shaping", "resume", "google").stdout
        mx.script.rcpt = None
        third = send(one)
    assert third.qmail.startswith(b"K")
    assert _local_paths(one) == _local_paths(two) == []  # kept in Redis only


def _local_paths(home) -> list[str]:
    import os

    folder = os.path.join(home.path, "qremote", "shaping")
    return os.listdir(folder) if os.path.isdir(folder) else []


def test_two_hosts_keep_one_rate_together(fleet, zone):
    one, two, _ = fleet
    text = '["slow.example"]\nmax_message_rate = "4/s"\n'
    stamps: list[float] = []
    with ScriptedServer() as mx:
        for h in (one, two):
            setup(h, zone, mx, "slow.example", "mx.slow.example", text)
        for i in range(6):
            run = send(one if i % 2 else two, "slow.example")
            assert run.qmail.startswith(b"K"), run.output
            assert b"unreachable" not in run.output
            stamps.append(time.time())
        for h in (one, two):
            h.write("shaping.toml", '["slow.example"]\nmax_message_rate = "1/h"\n')
        sent = send(one, "slow.example")
        refused = send(two, "slow.example")
    assert all(b - a >= 0.24 for a, b in zip(stamps, stamps[1:], strict=False))
    assert sent.qmail.startswith(b"K")
    assert refused.qmail.startswith(b"ZRate limit of 1/h for the mx:mx.slow.example group")
    assert _local_paths(one) == _local_paths(two) == []  # kept in Redis, not on the hosts


def test_without_redis_each_host_shapes_alone_and_says_so(fleet, zone):
    one, _, redis = fleet
    one.write("sharedstate", "redis://127.0.0.1:9/0\n")  # nothing listens there
    with ScriptedServer(Script(rcpt=GMAIL)) as mx:
        setup(one, zone, mx, "gmail.example", "alt1.gmail-smtp-in.l.google.example")
        first = send(one)
        second = send(one)
    said = first.output.decode()
    assert "Shared state redis://127.0.0.1:9/0 unreachable (" in said
    assert "this host's own shaping used." in said
    assert "is suspended for 3600 s" in said
    assert second.qmail.startswith(b"ZDeliveries to the google group from default")
    assert _local_paths(one) != []


def test_a_store_whose_folder_was_removed_makes_it_again(tmp_path):
    """An administrator may remove qremote/shaping/ to start afresh while qremoted runs."""
    import shutil

    from qremote.shaping.state import Store

    store = Store(str(tmp_path))
    rate = parse_rate("1/h")
    assert isinstance(store.reserve("g", "default", rate, 1000.0, 5), rates.Admitted)
    assert isinstance(store.reserve("g", "default", rate, 1001.0, 5), rates.Refused)
    shutil.rmtree(store.root)
    assert isinstance(store.reserve("g", "default", rate, 1002.0, 5), rates.Admitted)
    shutil.rmtree(store.root)
    store.update("g", "default", lambda s: s)  # nothing set: no file, and no error


# --- source addresses: their own rates, warm-up, overflow -----------------------------------


def test_a_warm_up_allowance_grows_day_by_day_until_full():
    import datetime
    import tomllib

    text = """
[source."192.0.2.10"]
warmup = {start = 2026-12-01, first = 1000, factor = 2, full = 20000}
[source."192.0.2.11"]
max_message_rate = "100/h"
warmup = {start = "2026-12-01", first = 1000, full = 20000}
[source."not-an-address"]
max_message_rate = "1/s"
[source."192.0.2.12"]
warmup = {start = "tomorrow", first = 1}
"""
    shaping, problems = parse(tomllib.loads(text))
    assert problems == [
        '[source."not-an-address"]: not an IP address; not applied',
        "[source.\"192.0.2.12\"]: warmup: start 'tomorrow' is not a date like 2026-12-01;"
        " not applied",
    ]
    day = datetime.datetime(2026, 12, 1, 12, tzinfo=datetime.UTC).timestamp()
    warm = shaping.sources["192.0.2.10"]
    assert [warm.rate(day + n * 86400) for n in range(3)] == [
        Rate(1000, 86400, "1000/day (warm-up)"),
        Rate(2000, 86400, "2000/day (warm-up)"),
        Rate(4000, 86400, "4000/day (warm-up)"),
    ]
    assert warm.rate(day + 5 * 86400) is None  # 32000 >= 20000: warmed up
    assert warm.rate(day - 86400) == Rate(1000, 86400, "1000/day (warm-up)")  # not yet begun
    both = shaping.sources["192.0.2.11"]
    assert both.rate(day).text == "1000/day (warm-up)"  # the slower of the two
    assert both.rate(day + 2 * 86400).text == "100/h"


def test_a_binding_may_name_further_addresses_of_one_family():
    from qremote.control import ControlError
    from qremote.routing import source

    table = source.parse_bindings([
        "example.org:192.0.2.10,192.0.2.11:mail.example.org",
        "example.net:[2001:db8::10],[2001:db8::11]",
    ])  # fmt: skip
    assert (table["example.org"].ip, table["example.org"].more) == ("192.0.2.10", ("192.0.2.11",))
    assert table["example.org"].helo == "mail.example.org"
    assert table["example.net"].more == ("2001:db8::11",)
    origin = source.source_for(b"a@example.org", table, None, "me.example")
    assert origin.overflow == ("192.0.2.11",)
    with pytest.raises(ControlError, match="not all IPv4 or all IPv6"):
        source.parse_bindings(["example.org:192.0.2.10,[2001:db8::1]"])


def test_a_source_at_its_limit_overflows_to_the_next_bound_address(home, zone):
    home.write("domainbindings", "example.org:127.0.0.1,127.0.0.2\n")
    home.write("shaping.toml", '[source."127.0.0.1"]\nmax_message_rate = "1/h"\n'
               '[source."127.0.0.2"]\nmax_message_rate = "1/h"\n')  # fmt: skip
    with ScriptedServer() as mx:
        zone.mx("free.example", (10, "mx.free.example"))
        zone.a("mx.free.example", mx.ip)
        runs = [send(home, "free.example") for _ in range(3)]
    assert [r.qmail[:1] for r in runs[:2]] == [b"K", b"K"]
    assert [c.peer[0] for c in mx.connections] == ["127.0.0.1", "127.0.0.2"]
    assert (
        "Shaping: 127.0.0.1 is at a limit for the mx:mx.free.example group; sent from "
        "127.0.0.2, the next address control/domainbindings gives."
    ) in runs[1].output.decode()
    assert runs[2].qmail.startswith(
        b"ZRate limit of 1/h for source address 127.0.0.2 reached (control/shaping.toml)"
    )
    assert len(mx.connections) == 2


def test_a_new_address_warms_up(home, zone):
    today = time.strftime("%Y-%m-%d", time.gmtime())
    home.write("domainbindings", "example.org:127.0.0.1\n")
    home.write("shaping.toml", f'[source."127.0.0.1"]\n'
               f"warmup = {{start = {today}, first = 1, full = 1000}}\n")  # fmt: skip
    with ScriptedServer() as mx:
        zone.mx("free.example", (10, "mx.free.example"))
        zone.a("mx.free.example", mx.ip)
        first, second = send(home, "free.example"), send(home, "free.example")
    assert first.qmail.startswith(b"K")
    assert second.qmail.startswith(
        b"ZRate limit of 1/day (warm-up) for source address 127.0.0.1 reached"
    )


# --- connections: their rate and how many messages each carries -------------------------


def test_a_connection_rate_counts_new_connections_only(home, zone):
    """Alone, each delivery opens a connection, so the second waits past shapingwait and
    is deferred; qremoted's kept connection carries the next messages, opening none."""
    from tests.support.daemon import Qremoted

    text = '["slow.example"]\nmax_connection_rate = "1/h"\n'
    home.write("shapingwait", "1\n")
    with ScriptedServer() as mx:
        setup(home, zone, mx, "slow.example", "mx.slow.example", text)
        first = home.deliver_standalone("slow.example", "a@example.org", ["b@slow.example"], MSG)
        second = home.deliver_standalone("slow.example", "a@example.org", ["b@slow.example"], MSG)
        assert first.qmail.startswith(b"K")
        assert second.qmail == (
            b"ZConnection rate limit of 1/h for the mx:mx.slow.example group from default"
            b" reached (control/shaping.toml); the next connection may open in 3600 s, and"
            b" qmail will retry. (#4.4.5)\n"
        )
        assert len(mx.connections) == 1
        setup(home, zone, mx, "kept.example", "mx.kept.example",
              '["kept.example"]\nmax_connection_rate = "1/h"\n')  # fmt: skip
        with Qremoted(home):
            runs = [send(home, "kept.example") for _ in range(3)]
    assert [r.qmail[:1] for r in runs] == [b"K", b"K", b"K"]
    assert len(mx.connections) == 2  # one for the three through qremoted


@pytest.mark.parametrize(("limit", "connections"), [(None, 1), (2, 2), (1, 3)])
def test_a_connection_carries_at_most_max_deliveries_per_connection(home, zone, limit, connections):
    from tests.support.daemon import Qremoted

    text = '["slow.example"]\nmax_message_rate = "1000/s"\n'
    if limit is not None:
        text += f"max_deliveries_per_connection = {limit}\n"
    with ScriptedServer() as mx, Qremoted(home):
        setup(home, zone, mx, "slow.example", "mx.slow.example", text)
        runs = [send(home, "slow.example") for _ in range(3)]
    assert [r.qmail[:1] for r in runs] == [b"K", b"K", b"K"]
    assert len(mx.connections) == connections
