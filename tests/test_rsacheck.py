"""The RSA step of DKIM verification is OpenSSL's (qremote/verify/rsacheck.py), and its
verdicts are dkimpy's: each case below is verified by qremote's verifier and by dkimpy's
own ``dkim.verify`` (its pure-Python RSA), which must agree, including where the two RSA
implementations would not (a signature not below the modulus, one with its leading zero
bytes left out, a key under 1024 bits)."""

from __future__ import annotations

import base64
import re
import subprocess

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from qremote.verify import dkimcheck, rsacheck
from qremote.verify.dnscache import MAX_RECORD
from qremote.verify.txt import Records
from tests.support.keys import dkim_record, pem

MESSAGE = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: hello\r\n"
    b"Date: Sat, 05 Dec 2026 12:00:00 +0000\r\n\r\nHello Bob.\r\n"
)


class Lookup(Records):
    """The key records both verifiers find: ours asks ``txt``, dkimpy ``dnsfunc``."""

    def dnsfunc(self, name, timeout=5):
        return self.txt(name.decode() if isinstance(name, bytes) else name)


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def signed(key, message: bytes = MESSAGE, algorithm: bytes = b"rsa-sha256") -> bytes:
    field = dkim.sign(message, b"s1", b"example.com", pem(key), signature_algorithm=algorithm)
    return field + message


def with_b(message: bytes, value: bytes) -> bytes:
    """The message with its DKIM-Signature's b= replaced."""
    head, sep, rest = message.partition(b"\r\n\r\n")
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", head)
    return re.sub(rb"(\bb=)[^;\r\n]*", lambda m: m.group(1) + value, unfolded, count=1) + sep + rest


def signature_number(message: bytes) -> int:
    head = re.sub(rb"\r\n[ \t]+", b" ", message.partition(b"\r\n\r\n")[0])
    value = re.search(rb"\bb=([^;\r\n]*)", head).group(1)
    return int.from_bytes(base64.b64decode(re.sub(rb"\s+", b"", value)), "big")


def both(message: bytes, record_key) -> tuple[str, bool]:
    """(qremote's result, dkimpy's verdict) for the message with ``record_key``'s record
    published for s1._domainkey.example.com."""
    lookup = Lookup({"s1._domainkey.example.com": dkim_record(record_key).encode()})
    ours = dkimcheck.verify(message, lookup)
    assert len(ours) == 1
    return ours[0].result, bool(dkim.verify(message, dnsfunc=lookup.dnsfunc))


def test_a_good_signature_passes_under_both(key):
    assert both(signed(key), key) == ("pass", True)


def test_the_rsa_step_for_a_usable_key_is_not_dkimpys_python(key, monkeypatch):
    def python_rsa(*_args):
        raise AssertionError("dkimpy's pure-Python RSA was used")

    monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_verify", python_rsa)
    lookup = Lookup({"s1._domainkey.example.com": dkim_record(key).encode()})
    assert [r.result for r in dkimcheck.verify(signed(key), lookup)] == ["pass"]
    altered = signed(key).replace(b"Subject: hello", b"Subject: hallo")
    assert [r.result for r in dkimcheck.verify(altered, lookup)] == ["fail"]


def test_rsa_sha1_is_judged_by_policy_before_any_rsa_check(key):
    """dkimpy accepts it; RFC 8301 says no, and dkimrules says so first."""
    assert both(signed(key, algorithm=b"rsa-sha1"), key) == ("policy", True)


def test_an_altered_field_fails_under_both(key):
    message = signed(key).replace(b"Subject: hello", b"Subject: hallo")
    assert both(message, key) == ("fail", False)


def test_another_keys_record_fails_under_both(key):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert both(signed(key), other) == ("fail", False)


def test_a_second_from_field_fails_under_both(key):
    message = signed(key).replace(b"To: bob", b"From: mallory@example.org\r\nTo: bob")
    assert both(message, key) == ("fail", False)


def test_a_signature_with_its_leading_zero_bytes_left_out_is_the_same_number(key):
    """One signature in 256 starts with a zero byte; a signer that drops it still made
    the same number, and dkimpy's arithmetic accepts it: so does ours."""
    for i in range(3000):
        message = signed(key, MESSAGE.replace(b"hello", b"hello %d" % i))
        number = signature_number(message)
        if number.bit_length() <= 2048 - 8:
            break
    else:
        pytest.fail("no signature with a leading zero byte in 3000 tries")
    short = base64.b64encode(number.to_bytes((number.bit_length() + 7) // 8, "big"))
    assert both(with_b(message, short), key) == ("pass", True)


def test_a_signature_not_below_the_modulus_is_left_to_dkimpy(key):
    """s + n is s to dkimpy's arithmetic (it reduces modulo n); OpenSSL refuses it. The
    verdict stays dkimpy's either way."""
    message = signed(key)
    n = key.public_key().public_numbers().n
    bigger = signature_number(message) + n
    value = base64.b64encode(bigger.to_bytes((bigger.bit_length() + 7) // 8, "big"))
    ours, theirs = both(with_b(message, value), key)
    assert (ours == "pass") is theirs


def test_a_key_under_1024_bits_is_refused_as_dkimpy_refuses_it():
    """cryptography will not make one; openssl will."""
    pem = subprocess.run(
        ["openssl", "genrsa", "-traditional", "768"], check=True, capture_output=True
    ).stdout
    small = serialization.load_pem_private_key(pem, password=None)
    ours, theirs = both(signed(small), small)
    assert ours == "permerror" and theirs is False


def test_fields_not_named_in_h_change_nothing_and_repeated_ones_are_taken_from_the_bottom(key):
    """Only the fields h= names are canonicalized: fields it does not name (with any
    white space) and a named field that occurs twice give dkimpy's verdict."""
    message = signed(key)
    unsigned = b"Received: from  x\t (y)\r\n\tby z ;  now  \r\nX-Odd:\t a  b \r\n"
    assert both(unsigned + message, key) == ("pass", True)
    # A second Subject above the signed one is not what was signed: h= names one
    # Subject, taken from the bottom; a second below it is what a verifier takes.
    above = message.replace(b"From: Alice", b"Subject: other\r\nFrom: Alice")
    assert both(above, key) == ("pass", True)
    below = message.replace(b"\r\n\r\nHello", b"\r\nSubject: other\r\n\r\nHello")
    assert both(below, key) == ("fail", False)


def test_a_record_is_read_once_and_its_key_kept_for_the_next_message(monkeypatch):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # not kept yet
    record = dkim_record(key).encode()
    reads = []
    real = dkim.evaluate_pk
    monkeypatch.setattr(dkim, "evaluate_pk", lambda *a: reads.append(a) or real(*a))
    lookup = Lookup({"s1._domainkey.example.com": record})
    for i in range(3):
        message = signed(key, MESSAGE.replace(b"hello", b"hello %d" % i))
        assert [r.result for r in dkimcheck.verify(message, lookup)] == ["pass"]
    assert len(reads) == 1
    assert rsacheck.public_key(record) is rsacheck.public_key(record)
    assert len(reads) == 1


def test_a_changed_record_under_the_same_name_is_the_new_key_at_once(key):
    """Keys are kept by the record's bytes: a rotated key is other bytes."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = "s1._domainkey.example.com"
    old = Lookup({name: dkim_record(key).encode()})
    new = Lookup({name: dkim_record(other).encode()})
    assert [r.result for r in dkimcheck.verify(signed(key), old)] == ["pass"]
    assert [r.result for r in dkimcheck.verify(signed(key), new)] == ["fail"]
    assert [r.result for r in dkimcheck.verify(signed(other), new)] == ["pass"]


def test_kept_keys_are_bounded_in_number_and_record_size(key, monkeypatch):
    monkeypatch.setattr(rsacheck, "KEYS_KEPT", 3)
    monkeypatch.setattr(rsacheck, "_keys", {})
    base = dkim_record(key).encode()
    records = [base + b" " * i for i in range(5)]
    for record in records:
        assert rsacheck.public_key(record) is not None
    assert list(rsacheck._keys) == records[2:]  # the oldest went first
    huge = base + b" " * (MAX_RECORD + 1)
    assert rsacheck.public_key(huge) is not None  # read, used, not kept
    assert huge not in rsacheck._keys


def test_a_record_openssl_is_not_given_is_kept_as_such(monkeypatch):
    """A key under 1024 bits is dkimpy's to refuse, every time."""
    pem_768 = subprocess.run(
        ["openssl", "genrsa", "-traditional", "768"], check=True, capture_output=True
    ).stdout
    small = serialization.load_pem_private_key(pem_768, password=None)
    record = dkim_record(small).encode()
    assert rsacheck.public_key(record) is None
    assert record in rsacheck._keys and rsacheck._keys[record] is None
