"""The attempt rules (qremote/attempts.py) without sockets: qmail's outcome table for a
delivery's addresses, and our fallbacks, one rule a test. The same rules are exercised
over real connections in test_outcomes.py, test_tls.py and test_daemon.py."""

from __future__ import annotations

from qremote import report
from qremote.attempts import Event, HostAttempt, Next, Refusal, Walk
from qremote.routing.mx import Target

A, B, C = Target("192.0.2.1", 10, "a"), Target("192.0.2.2", 10, "b"), Target("2001:db8::3", 20, "c")
ALL = frozenset({A.ip, B.ip, C.ip})
FIVE = Refusal(b"DConnected to x but greeting failed.\nRemote host said: 554 no\n", True)
FOUR = Refusal(b"ZConnected to y but greeting failed.\nRemote host said: 421 busy\n", False)


def test_addresses_go_in_qmails_order():
    assert Walk([A, B, C], ALL).order() == [A, B, C]


def test_a_kept_connections_address_goes_first():
    assert Walk([A, B, C], ALL, kept_ip=B.ip).order() == [B, A, C]


def test_addresses_of_another_family_are_left_out():
    assert Walk([A, B, C], frozenset({A.ip, B.ip})).order() == [A, B]


def test_nobody_reachable_is_qmails_no_connection_text():
    assert Walk([A, B], ALL).final("note") == (report.NOCONN, [])


def test_no_address_of_our_family_says_so():
    assert Walk([C], frozenset({A.ip})).final("no IPv6 here") == (report.NOCONN, ["no IPv6 here"])


def test_every_address_with_a_5xx_greeting_bounces_with_the_last_words():
    walk = Walk([A, B], ALL)
    walk.refused(FIVE)
    walk.refused(Refusal(FIVE.report.replace(b"x", b"z"), True))
    assert walk.final("note") == (walk.refusals[-1].report, [])


def test_one_temporary_refusal_makes_it_temporary():
    walk = Walk([A, B], ALL)
    walk.refused(FIVE)
    walk.refused(FOUR)
    assert walk.final("note") == (FOUR.report, [])


def test_a_5xx_greeting_and_an_unreachable_address_is_temporary():
    walk = Walk([A, B], ALL)
    walk.refused(FIVE)
    text, _ = walk.final("note")
    assert text == b"Z" + FIVE.report[1:]


def test_refusals_move_on_and_reports_end_it():
    attempt = HostAttempt(tls_wanted=True, tls_required=False)
    assert attempt.after(Event.UNREACHABLE) is Next.NEXT_ADDRESS
    assert attempt.after(Event.REFUSED) is Next.NEXT_ADDRESS
    assert attempt.after(Event.OVER) is Next.REPORT


def test_a_stale_or_idle_dead_kept_connection_is_replaced():
    attempt = HostAttempt(tls_wanted=False, tls_required=False)
    assert attempt.after(Event.STALE) is Next.NEW_CONNECTION
    assert attempt.after(Event.DIED_IDLE) is Next.NEW_CONNECTION


def test_failed_opportunistic_tls_is_retried_once_in_plain_text():
    attempt = HostAttempt(tls_wanted=True, tls_required=False)
    assert attempt.after(Event.TLS_FAILED) is Next.PLAIN
    assert attempt.after(Event.TLS_FAILED) is Next.REPORT


def test_failed_required_tls_ends_the_delivery():
    assert HostAttempt(tls_wanted=True, tls_required=True).after(Event.TLS_FAILED) is Next.REPORT
