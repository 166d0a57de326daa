"""The attempt rules (qremote/delivery/attempt.py) without sockets: qmail's outcome table
for a delivery's addresses, and our TLS and reuse fallbacks, one rule a test. The same
rules run over real connections in test_outcomes.py, test_tls.py, test_dane.py,
test_mtasts.py and test_daemon.py (kept connections)."""

from __future__ import annotations

from qremote import report
from qremote.delivery.attempt import (
    SUCCESS,
    Attempt,
    Connect,
    Conversed,
    Finish,
    Kept,
    NextAddress,
    Reuse,
    Tls,
    TlsFacts,
    Walk,
)
from qremote.delivery.outcome import Notes
from qremote.routing.mx import Target
from qremote.smtp.conversation import Finished, NextHost, Stale

A, B, C = Target("192.0.2.1", 10, "a"), Target("192.0.2.2", 10, "b"), Target("2001:db8::3", 20, "c")
ALL = frozenset({A.ip, B.ip, C.ip})
FIVE = NextHost(b"DConnected to x but greeting failed.\nRemote host said: 554 no\n", True)
FOUR = NextHost(b"ZConnected to y but greeting failed.\nRemote host said: 421 busy\n", False)

PLAIN = TlsFacts()
OPPORTUNISTIC = TlsFacts(planned=True)
PINNED = TlsFacts(planned=True, required=True, verifying=True, authenticated=True)
DANE = TlsFacts(planned=True, required=True, dane=True, authenticated=True)
DANE_UNUSABLE_RECORDS = TlsFacts(planned=True, required=True, dane=True)
STS_ENFORCE = TlsFacts(
    planned=True, required=True, verifying=True, authenticated=True, sts="enforce"
)
STS_TESTING = TlsFacts(planned=True, verifying=True, authenticated=True, sts="testing")
RELAY_AUTH = TlsFacts(planned=True, required=True, verifying=True, authenticated=True)

DELIVERED = Finished(b"K192.0.2.1 accepted message.\nRemote host said: 250 ok\n")
KEEPABLE = Finished(DELIVERED.report, open=True)
TLS_INFO = "TLS TLSv1.3 TLS_AES_256_GCM_SHA384, verified"


def attempt(tls: TlsFacts, kept: Kept = Kept.NONE, carried: int = 0) -> Attempt:
    return Attempt(A.ip, tls, Notes(["signed"]), kept, carried)


# -- the walk over the addresses ----------------------------------------------------------


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
    walk.refused(NextHost(FIVE.report.replace(b"x", b"z"), True))
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


# -- one address: connections ---------------------------------------------------------------


def test_a_new_connection_with_the_planned_tls_or_none():
    assert attempt(OPPORTUNISTIC).start().command == Connect(Tls.PLANNED)
    assert attempt(PLAIN).start().command == Connect(Tls.NONE)


def test_unreachable_moves_on_with_nothing_to_say():
    one = attempt(OPPORTUNISTIC)
    one.start()
    assert one.unreachable().command == NextAddress(None)


def test_refused_before_the_envelope_moves_on_with_its_words_and_the_notes():
    one = attempt(PLAIN)
    one.start()
    answer = one.conversed(Conversed(FIVE))
    assert answer.command == NextAddress(NextHost(FIVE.report + b"signed\n", True))


def test_the_conversations_report_ends_the_delivery_with_the_notes():
    one = attempt(PLAIN)
    one.start()
    answer = one.conversed(Conversed(DELIVERED, auth_info="Authenticated as u (PLAIN)."))
    assert answer.command == Finish(DELIVERED.report + b"signed\nAuthenticated as u (PLAIN).\n")
    assert answer.verdict is None


def test_an_open_connection_is_kept():
    one = attempt(PLAIN)
    one.start()
    command = one.conversed(Conversed(KEEPABLE)).command
    assert isinstance(command, Finish) and command.keep


def test_dying_mid_message_ends_the_delivery_with_qmails_text():
    one = attempt(PLAIN)
    one.start()
    dropped = report.dropped(A.ip, True)
    assert one.dropped(idle=False, text=dropped).command == Finish(dropped + b"signed\n")


def test_what_was_sent_anyway_is_noted():
    one = attempt(PLAIN)
    one.start()
    said = Conversed(DELIVERED, raw_headers=True, eight_bit_unasked=True)
    text = one.conversed(said).command.text  # type: ignore[union-attr]
    assert text.endswith(f"{report.NOTE_RAW_HEADERS}\n{report.NOTE_8BIT}\n".encode())


# -- one address: kept connections ----------------------------------------------------------


def test_a_kept_connection_that_fits_is_reused_and_noted():
    one = attempt(OPPORTUNISTIC, Kept.FITS, carried=4)
    assert one.start().command == Reuse()
    text = one.conversed(Conversed(DELIVERED, tls_info=TLS_INFO)).command.text  # type: ignore[union-attr]
    assert text.endswith(f"{report.note_reused(A.ip, 5)}\n".encode())


def test_a_kept_plain_connection_serves_an_opportunistic_address_as_plain_text():
    one = attempt(OPPORTUNISTIC, Kept.FITS_PLAIN)
    assert one.start().command == Reuse()
    assert one.now is Tls.NONE


def test_a_kept_plain_connection_never_serves_required_tls():
    assert attempt(PINNED, Kept.FITS_PLAIN).start().command == Connect(Tls.PLANNED, True)


def test_a_kept_connection_set_up_otherwise_is_ended():
    assert attempt(OPPORTUNISTIC, Kept.STALE_SETUP).start().command == Connect(Tls.PLANNED, True)


def test_a_stale_kept_connection_is_replaced_with_the_same_tls():
    one = attempt(OPPORTUNISTIC, Kept.FITS)
    one.start()
    assert one.conversed(Conversed(Stale())).command == Connect(Tls.PLANNED)


def test_a_kept_plain_connection_that_died_idle_is_replaced_by_a_plain_one():
    one = attempt(OPPORTUNISTIC, Kept.FITS_PLAIN)
    one.start()
    assert one.dropped(idle=True, text=b"Z...").command == Connect(Tls.NONE)


def test_a_new_connection_that_dies_is_not_tried_again():
    one = attempt(OPPORTUNISTIC)
    one.start()
    assert isinstance(one.dropped(idle=True, text=b"Z").command, Finish)
    assert attempt(PLAIN).stale().command == NextAddress(None)


# -- one address: TLS -----------------------------------------------------------------------


def test_failed_opportunistic_tls_is_retried_once_in_plain_text():
    one = attempt(OPPORTUNISTIC)
    one.start()
    answer = one.tls_failed("handshake failed")
    assert answer.command == Connect(Tls.NONE)
    assert report.note_tls_retried(A.ip, "handshake failed") in one.notes.lines
    assert answer.verdict is None  # no DANE or MTA-STS: nothing to report


def test_failed_required_tls_ends_the_delivery_without_plain_text():
    one = attempt(PINNED)
    one.start()
    answer = one.tls_failed("certificate verify failed")
    assert answer.command == Finish(report.tls_failed(A.ip, "certificate verify failed"), False)


def test_failed_tls_to_a_relay_with_auth_is_never_plain_text():
    one = attempt(RELAY_AUTH)
    one.start()
    assert isinstance(one.tls_failed("bad certificate").command, Finish)


def test_dane_failure_moves_to_the_next_mx_and_is_reported():
    one = attempt(DANE)
    one.start()
    answer = one.tls_failed("DANE: no certificate matches")
    failed = report.tls_failed(A.ip, "DANE: no certificate matches")
    assert answer.command == NextAddress(NextHost(failed + b"signed\n", False))
    assert answer.verdict == "validation-failure"


def test_dane_success_is_reported():
    one = attempt(DANE)
    one.start()
    assert one.conversed(Conversed(DELIVERED, tls_info=TLS_INFO)).verdict == SUCCESS


def test_dane_records_all_unusable_count_tls_as_success():
    one = attempt(DANE_UNUSABLE_RECORDS)
    one.start()
    assert one.conversed(Conversed(DELIVERED, tls_info=TLS_INFO)).verdict == SUCCESS


def test_a_failed_tlsa_lookup_skips_the_host_and_is_reported():
    answer = Attempt.unusable(b"ZNot trying a (192.0.2.1): ...\n", Notes(["signed"]))
    assert answer.command == NextAddress(
        NextHost(b"ZNot trying a (192.0.2.1): ...\nsigned\n", False)
    )
    assert answer.verdict == "dnssec-invalid"


def test_sts_enforce_failure_moves_to_the_next_mx():
    one = attempt(STS_ENFORCE)
    one.start()
    answer = one.tls_failed("certificate has expired")
    assert isinstance(answer.command, NextAddress)
    assert answer.verdict == "certificate-expired"


def test_sts_testing_failure_is_reported_and_sent_with_tls_unverified():
    one = attempt(STS_TESTING)
    one.start()
    answer = one.tls_failed("certificate verify failed: self-signed")
    assert answer.command == Connect(Tls.UNVERIFIED)
    assert answer.verdict == "certificate-not-trusted"
    assert (
        report.note_sts_testing_failed("certificate verify failed: self-signed") in one.notes.lines
    )
    # the unverified connection's success is no authentication: nothing more to report
    assert one.conversed(Conversed(DELIVERED, tls_info="TLS 1.3, not verified")).verdict is None


def test_sts_testing_then_unverified_tls_failing_falls_back_to_plain_text():
    one = attempt(STS_TESTING)
    one.start()
    one.tls_failed("certificate verify failed")
    answer = one.tls_failed("handshake failed")
    assert answer.command == Connect(Tls.NONE)
    assert answer.verdict == "validation-failure"


def test_no_starttls_offered_under_a_policy_is_reported():
    one = attempt(STS_TESTING)
    one.start()
    assert one.conversed(Conversed(DELIVERED)).verdict == "starttls-not-supported"


def test_a_refusal_before_starttls_is_not_a_tls_failure():
    one = attempt(STS_TESTING)
    one.start()
    assert one.conversed(Conversed(FOUR)).verdict is None


def test_kept_connections_give_no_verdicts():
    one = attempt(DANE, Kept.FITS)
    one.start()
    assert one.conversed(Conversed(DELIVERED, tls_info=TLS_INFO)).verdict is None


def test_required_tls_that_cannot_be_set_up_ends_it_before_any_connection():
    broken = TlsFacts(required=True, authenticated=True, unavailable="control/tlshosts/a.pem: bad")
    answer = attempt(broken).start()
    assert answer.command == Finish(report.control_error("control/tlshosts/a.pem: bad"), False)
    assert answer.verdict is None


def test_opportunistic_tls_that_cannot_be_set_up_goes_plain_with_a_note():
    broken = TlsFacts(unavailable="control/clientcert.pem: no such file")
    one = attempt(broken)
    assert one.start().command == Connect(Tls.NONE)
    assert one.notes.lines == ["signed", report.note_tls_not_tried(broken.unavailable)]


def test_the_mta_sts_policy_that_holds_the_host_is_noted():
    one = attempt(TlsFacts(planned=True, verifying=True, sts="testing", sts_id="20261204"))
    one.start()
    assert one.notes.lines == ["signed", report.note_sts("testing", "20261204")]
