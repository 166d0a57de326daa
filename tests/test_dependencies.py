"""What qremote uses of its dependencies beyond their documented interfaces, held here so
that an upgrade that changes it fails with a message naming what moved, not somewhere deep
in a verification result.

dkimpy: setup.cfg pins the tested range (1.1.x). qremote-dkimverify calls
``DKIM.verify_sig`` (dkimpy's own per-signature step, not part of its documented API) with
the key record it read and judged itself, reads ``DKIM.body`` for the body-hash cache,
uses ``CanonicalizationPolicy.from_c_value`` and ``canonicalize_body`` to canonicalize as
dkimpy does, and ``util.parse_tag_value`` to read the signature's tags.
"""

from __future__ import annotations

import inspect

import dkim
import dkim.util

INTERFACE = (
    "qremote.verify.dkimcheck relies on dkimpy internals; this dkimpy ({version}) changed "
    "them: {what}. Pin dkimpy to the tested range in setup.cfg (>=1.1,<1.2) or adapt "
    "dkimcheck.py."
)


def _version() -> str:
    from importlib.metadata import version

    return version("dkimpy")


def _fail(what: str) -> str:
    return INTERFACE.format(version=_version(), what=what)


def test_dkimpy_verify_sig_takes_what_dkimcheck_passes():
    params = list(inspect.signature(dkim.DKIM.verify_sig).parameters)
    assert params == ["self", "sig", "include_headers", "sig_header", "dnsfunc"], _fail(
        f"DKIM.verify_sig{inspect.signature(dkim.DKIM.verify_sig)}"
    )


def test_dkimpy_has_the_other_names_dkimcheck_uses():
    names = {
        "dkim.DKIM": dkim.DKIM,
        "dkim.CanonicalizationPolicy.from_c_value": getattr(
            getattr(dkim, "CanonicalizationPolicy", None), "from_c_value", None
        ),
        "dkim.util.parse_tag_value": getattr(dkim.util, "parse_tag_value", None),
        "dkim.util.InvalidTagValueList": getattr(dkim.util, "InvalidTagValueList", None),
    }
    for error in ("ValidationError", "KeyFormatError", "UnparsableKeyError",
                  "UnknownKeyTypeError", "DKIMException"):  # fmt: skip
        names[f"dkim.{error}"] = getattr(dkim, error, None)
    missing = [name for name, thing in names.items() if thing is None]
    assert not missing, _fail("no " + ", ".join(missing))
    policy = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    assert policy.canonicalize_body(b"a  b \r\n\r\n") == b"a b\r\n", _fail(
        "canonicalize_body no longer gives RFC 6376's relaxed body"
    )
    checker = dkim.DKIM(b"Subject: x\r\n\r\nbody\r\n")
    assert checker.body == b"body\r\n", _fail("DKIM.body is not the message's body")


def test_the_pinned_range_is_the_one_installed():
    version = tuple(int(p) for p in _version().split(".")[:2])
    assert (1, 1) <= version < (1, 2), _fail("the installed version is outside >=1.1,<1.2")
