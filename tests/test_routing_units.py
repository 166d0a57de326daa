"""qremote/routing/routes.py and mx.py fed plain data: smtproutes walk, MX order, the
best-MX self-check."""

from __future__ import annotations

import random

import pytest

from qremote.control import parse_map
from qremote.routing import routes
from qremote.routing.mx import Target, order, usable


def test_smtproutes_walk_order():
    assert routes.suffixes("a.b.c") == ["a.b.c", ".b.c", ".c", ""]
    table = parse_map(["#x", ".b.c:relay1", "A.B.C:relay2:26", ":default"])
    assert routes.route_for("a.b.c", table) == routes.Route("relay2", 26)
    assert routes.route_for("x.b.c", table) == routes.Route("relay1", 25)
    assert routes.route_for("other", table) == routes.Route("default", 25)
    assert routes.route_for("other", parse_map(["x:y"])) is None


def test_smtproutes_bad_port_and_brackets():
    with pytest.raises(routes.RouteError):
        routes.parse_route("relay:http")
    with pytest.raises(routes.RouteError):
        routes.parse_route("[::1")
    assert routes.parse_route("[2001:db8::1]:587") == routes.Route("2001:db8::1", 587)
    assert routes.parse_route(":26") is None


def test_mx_order_sorts_and_shuffles_equals():
    seen = set()
    for seed in range(30):
        got = order([(20, "c"), (10, "a"), (10, "b")], random.Random(seed))
        assert got[2] == (20, "c")
        seen.add(tuple(got[:2]))
    assert seen == {((10, "a"), (10, "b")), ((10, "b"), (10, "a"))}


def test_ipme_keeps_only_better_exchangers():
    t = [Target("1.1.1.1", 5, "a"), Target("127.0.0.1", 10, "me"), Target("2.2.2.2", 10, "b")]
    assert usable(t, {"127.0.0.1"}, routed=False) == t[:1]
    assert usable(t[1:], {"127.0.0.1"}, routed=False) is None
    assert usable(t[1:], {"127.0.0.1"}, routed=True) == t[1:]
