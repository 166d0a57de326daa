"""The smarthost rules without sockets: route lines in both patches' forms, authsenders'
walk, control/smtpauth, the relay's TLS row, the SASL exchanges against the RFCs' own
examples, and the AUTH states of the conversation."""

from __future__ import annotations

import base64

import pytest

from qremote.control import ControlError, parse_map
from qremote.relay import sasl, smtpauth
from qremote.relay.plan import relaying_for
from qremote.routing import routes
from qremote.routing.routes import Credentials, Route, RouteError
from qremote.smtp.conversation import (
    Account,
    Conversation,
    Envelope,
    Finished,
    Send,
    Setup,
    StartTLS,
)
from qremote.smtp.replies import ReplyParser
from qremote.tls.policy import Mode, PolicyFiles, RelayTls, decide

ALICE = Credentials(b"alice", b"pw")

# -- route lines ---------------------------------------------------------------------------


def test_fehcom_form_user_between_bars_password_is_the_rest():
    route = routes.parse_route("relay.net:587|alice|p:a|ss w d")
    assert route == Route("relay.net", 587, Credentials(b"alice", b"p:a|ss w d"))


def test_fehcom_form_with_empty_port_or_user():
    assert routes.parse_route("relay.net:|alice|pw") == Route("relay.net", 25, ALICE)
    assert routes.parse_route("relay.net:25||pw") == Route("relay.net", 25, None)


def test_clegg_form_two_words_after_the_relay():
    assert routes.parse_route("relay.net:2525 alice pw") == Route("relay.net", 2525, ALICE)
    assert routes.parse_route("relay.net\talice   pw") == Route("relay.net", 25, ALICE)
    with pytest.raises(RouteError, match="not 3 words"):
        routes.parse_route("relay.net alice p w")


def test_blanks_before_the_relay_are_not_part_of_it():
    assert routes.parse_route(" relay.net:2525") == Route("relay.net", 2525)
    assert routes.parse_route("\trelay.net alice pw") == Route("relay.net", 25, ALICE)


def test_whichever_separator_comes_first_decides_the_form():
    # A Clegg password holding '|' is still Clegg: the blank comes first.
    assert routes.parse_route("relay.net alice p|w").credentials == Credentials(b"alice", b"p|w")
    # A fehcom password holding blanks is still fehcom: the bar comes first.
    assert routes.parse_route("relay.net|alice|p w").credentials == Credentials(b"alice", b"p w")


def test_ipv6_relay_with_credentials():
    assert routes.parse_route("[2001:db8::1]:465|a|b") == Route(
        "2001:db8::1", 465, Credentials(b"a", b"b")
    )


@pytest.mark.parametrize(
    "value",
    [
        "relay:http|alice|SECRET",
        "relay:25|aliceSECRET",
        "relay SECRET",
        "[::1|a|SECRET",
        "|alice|SECRET",
        "relay:99999 a SECRET",
    ],
)
def test_route_errors_never_repeat_the_value(value):
    with pytest.raises(RouteError) as e:
        routes.parse_route(value, "control/smtproutes line for 'x.net'")
    assert "SECRET" not in str(e.value) and "control/smtproutes line for 'x.net'" in str(e.value)


def test_credentials_never_show_the_password_in_repr():
    assert "pw" not in repr(ALICE).replace("password", "")


def test_authsenders_walk():
    assert routes.sender_keys("Al@Mail.Example.org") == [
        "al@mail.example.org",
        "@mail.example.org",
        "mail.example.org",
        ".example.org",
        ".org",
        "",
    ]
    assert routes.sender_keys("") == [""]


def test_authsenders_before_smtproutes_and_bounces_use_the_default():
    senders = parse_map(["a@x.org:r1|u1|p1", "@y.org:r2 u2 p2", ":r3|u3|p3", "n@x.org:"])
    table = parse_map([":smart"])
    assert routes.route_for("d.net", table, "a@x.org", senders).relay == "r1"
    assert routes.route_for("d.net", table, "b@y.org", senders).relay == "r2"
    assert routes.route_for("d.net", table, "b@z.org", senders).relay == "r3"
    assert routes.route_for("d.net", table, "", senders).relay == "r3"
    assert routes.route_for("d.net", table, "n@x.org", senders).relay == "smart"
    found = routes.route_for("d.net", table, "a@x.org", senders)
    assert found.where == "control/authsenders line for 'a@x.org'"
    assert routes.route_for("d.net", table).where == "control/smtproutes default line"


# -- control/smtpauth and the plan -----------------------------------------------------------


def test_smtpauth_decodes_any_byte_and_prefers_the_port_line():
    table = smtpauth.parse(
        [
            "# relays",
            "Relay.net user=a%20b password=%FF%25x mech=plain",
            "relay.net:465 tls=starttls",
        ]
    )
    assert table.problems == ()
    entry = table.entry("relay.net", 25)
    assert entry.credentials == Credentials(b"a b", b"\xff%x") and entry.mechanism == "PLAIN"
    assert table.entry("relay.net", 465).tls == "starttls"


@pytest.mark.parametrize(
    "line,problem",
    [
        ("r user=a password=SECRET mech=NTLM", "mech='NTLM' is not one of"),
        ("r password=SECRET", "user= and password= go together"),
        ("r SECRET", "word 1 is not"),
        ("r tls=maybe", "tls= must be implicit or starttls"),
        ("r verify=SECRET", "verify= must be yes or no"),
        ("r user=a user=b password=SECRET", "user= given twice"),
        ("[r user=a password=SECRET", "unclosed '['"),
        ("r user=a password=" + "x" * 1025, "longer than 1024 bytes"),
    ],
)
def test_smtpauth_problems_name_the_line_not_the_secret(line, problem):
    [said] = smtpauth.parse([line]).problems
    assert said.startswith("control/smtpauth line 1") and problem in said
    assert "SECRET" not in said and "xxxx" not in said


def test_plan_implicit_tls_on_465_unless_smtpauth_says_starttls():
    none = smtpauth.AuthTable({})
    assert relaying_for(Route("r", 465), none).implicit_tls
    assert not relaying_for(Route("r", 587, ALICE), none).implicit_tls
    said = smtpauth.parse(["r:465 tls=starttls", "r:2465 tls=implicit"])
    assert not relaying_for(Route("r", 465), said).implicit_tls
    assert relaying_for(Route("r", 2465), said).implicit_tls


def test_plan_route_credentials_win_over_smtpauth():
    table = smtpauth.parse(["r user=other password=x mech=LOGIN verify=no"])
    relaying = relaying_for(Route("r", 25, ALICE, "w"), table)
    assert relaying.credentials == ALICE and relaying.mechanism == "LOGIN"
    assert relaying.tls == RelayTls("w", False, False)
    assert relaying_for(Route("r", 25), table).credentials == Credentials(b"other", b"x")


def test_plan_without_credentials_or_implicit_tls_is_an_ordinary_hop():
    relaying = relaying_for(Route("r", 25), smtpauth.AuthTable({}))
    assert relaying.tls is None and relaying.identity() is None


def test_plan_tells_accounts_apart_without_keeping_the_password():
    empty = smtpauth.AuthTable({})
    one = relaying_for(Route("r", 25, ALICE), empty).identity()
    two = relaying_for(Route("r", 25, Credentials(b"alice", b"other")), empty).identity()
    assert one != two and "pw" not in str(one)


# -- the relay's TLS row -----------------------------------------------------------------------


def test_relay_tls_row():
    files = PolicyFiles("/c", plain=frozenset({"plain.net"}), pinned=frozenset({"pinned.net"}))
    need = RelayTls("control/smtproutes line for 'x'", False, True)
    system = decide(files, "relay.net", need)
    assert system.mode is Mode.REQUIRED and system.system and system.verified
    pinned = decide(files, "pinned.net", need)
    assert pinned.ca_file == "/c/tlshosts/pinned.net.pem" and not pinned.system
    unverified = decide(files, "pinned.net", RelayTls("w", True, False))
    assert unverified.mode is Mode.REQUIRED and not unverified.verified and unverified.implicit
    with pytest.raises(ControlError, match="control/notlshosts/plain.net forbids TLS"):
        decide(files, "plain.net", need)


# -- SASL, against the RFCs' examples ------------------------------------------------------------


def test_scram_sha_256_rfc7677_example():
    """RFC 7677 section 3: user 'user', password 'pencil', the client nonce given."""
    mech = sasl.ScramSha256(Credentials(b"user", b"pencil"), nonce="rOprNGfwEbeRWgbNEkqO")
    assert mech.initial() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert mech.respond(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert not mech.finished()
    assert mech.respond(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") == b""
    assert mech.finished()


def test_scram_refuses_a_wrong_signature_a_foreign_nonce_and_huge_counts():
    def fresh():
        return sasl.ScramSha256(Credentials(b"user", b"pencil"), nonce="abc")

    mech = fresh()
    mech.respond(b"r=abcdef,s=QUJD,i=4096")
    with pytest.raises(sasl.SaslError, match="signature is wrong"):
        mech.respond(b"v=" + base64.b64encode(b"\0" * 32))
    with pytest.raises(sasl.SaslError, match="does not extend ours"):
        fresh().respond(b"r=xyz123,s=QUJD,i=4096")
    with pytest.raises(sasl.SaslError, match="iteration count"):
        fresh().respond(b"r=abcdef,s=QUJD,i=1000000000")
    with pytest.raises(sasl.SaslError, match="refused: invalid-proof"):
        m = fresh()
        m.respond(b"r=abcdef,s=QUJD,i=1")
        m.respond(b"e=invalid-proof")


def test_scram_escapes_the_user_name():
    mech = sasl.ScramSha256(Credentials(b"a=b,c", b"x"), nonce="n")
    assert mech.initial() == b"n,,n=a=3Db=2Cc,r=n"


def test_cram_md5_rfc2195_example():
    mech = sasl.CramMd5(Credentials(b"tim", b"tanstaaftanstaaf"))
    challenge = b"<1896.697170952@postoffice.reston.mci.net>"
    assert mech.respond(challenge) == b"tim b913a602c7eda7a495b4e6e7334d3890"


def test_plain_and_login():
    assert sasl.Plain(ALICE).initial() == b"\0alice\0pw"
    login = sasl.Login(ALICE)
    assert login.initial() is None
    assert [login.respond(b"Username:"), login.respond(b"Password:")] == [b"alice", b"pw"]


@pytest.mark.parametrize(
    "text,prepared",
    [("I\u00adX", "IX"), ("user", "user"), ("USER", "USER"), ("\u00aa", "a"), ("\u2168", "IX")],
)
def test_saslprep_rfc4013_examples(text, prepared):
    assert sasl.saslprep(text) == prepared


@pytest.mark.parametrize("text", ["\u0007", "\u0627\u0031"])
def test_saslprep_rfc4013_errors(text):
    with pytest.raises(ValueError):
        sasl.saslprep(text)


def test_mechanism_choice():
    offered = ("LOGIN", "PLAIN", "CRAM-MD5", "SCRAM-SHA-256")
    assert sasl.pick_mechanism(offered, None) == "SCRAM-SHA-256"
    assert sasl.pick_mechanism(("login", "plain"), None) == "PLAIN"
    assert sasl.pick_mechanism(offered, "LOGIN") == "LOGIN"
    assert sasl.pick_mechanism(("PLAIN",), "CRAM-MD5") is None
    assert sasl.pick_mechanism(("GSSAPI",), None) is None


# -- the conversation's AUTH states ---------------------------------------------------------------


def reply(text: str):
    [r] = ReplyParser().feed(text.encode())
    return r


def conversation(**kw) -> Conversation:
    envelope = Envelope("me.example", b"a@example.org", [b"b@example.com"])
    return Conversation("192.0.2.1", envelope, Setup(login=Account(ALICE, "PLAIN", "w"), **kw))


def test_auth_waits_for_tls_even_when_offered_in_clear():
    conv = conversation(want_tls=True, require_tls=True)
    conv.receive(reply("220 hi\r\n"))
    actions = conv.receive(reply("250-relay\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n"))
    assert actions == [Send(b"STARTTLS\r\n")]
    assert conv.receive(reply("220 go\r\n")) == [StartTLS()]
    conv.tls_started()
    actions = conv.receive(reply("250-relay\r\n250 AUTH=PLAIN\r\n"))
    assert actions == [Send(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0pw") + b"\r\n")]
    actions = conv.receive(reply("235 ok\r\n"))
    assert actions[0].data.startswith(b"MAIL FROM:<a@example.org>")
    assert conv.authenticated == "alice (PLAIN)"


def test_no_tls_no_auth_even_without_a_tls_policy():
    """Defence in depth: a Account never goes out in clear, whatever the caller set up."""
    conv = conversation()
    conv.receive(reply("220 hi\r\n"))
    actions = conv.receive(reply("250-relay\r\n250 AUTH PLAIN\r\n"))
    assert actions[0] == Send(b"QUIT\r\n") and isinstance(actions[1], Finished)
    assert b"TLS is required" in actions[1].report


def test_a_challenge_that_is_not_base64_cancels_the_exchange():
    conv = Conversation(
        "192.0.2.1",
        Envelope("me", b"a@x", [b"b@y"]),
        Setup(login=Account(ALICE, "LOGIN", "w")),
        tls=True,
    )
    conv.receive(reply("220 hi\r\n"))
    assert conv.receive(reply("250-r\r\n250 AUTH LOGIN\r\n")) == [Send(b"AUTH LOGIN\r\n")]
    assert conv.receive(reply("334 !!!\r\n")) == [Send(b"*\r\n")]
    actions = conv.receive(reply("501 cancelled\r\n"))
    assert isinstance(actions[-1], Finished)
    assert b"failed: its challenge was not base64" in actions[-1].report
    assert actions[-1].report.startswith(b"Z")


def test_auth_refused_is_never_a_bounce():
    conv = Conversation(
        "192.0.2.1",
        Envelope("me", b"a@x", [b"b@y"]),
        Setup(login=Account(ALICE, None, "w")),
        tls=True,
    )
    conv.receive(reply("220 hi\r\n"))
    conv.receive(reply("250-r\r\n250 AUTH PLAIN\r\n"))
    actions = conv.receive(reply("554 5.7.8 no\r\n"))
    assert actions[-1].report.startswith(b"ZConnected to 192.0.2.1 but authentication as alice")
