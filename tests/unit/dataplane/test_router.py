"""Route matching: Host → virtual host in Envoy's order, then the first route whose path
and header conditions match; weighted clusters in proportion to their weights."""

from __future__ import annotations

import json
import math
import random

import pytest

from plait.dataplane.bootstrap import parse_bootstrap
from plait.codec.http1 import Request
from plait.dataplane.router import Router
from plait.testing import sidecar as sc


def router(virtual_hosts: list[dict], clusters=("a", "b", "c")) -> Router:
    doc = sc.bootstrap(listeners=[sc.listener("l", virtual_hosts)],
                       clusters=[sc.cluster(name, [1000 + i]) for i, name in enumerate(clusters)])
    return Router(parse_bootstrap(json.dumps(doc)).snapshot.listeners[0].route_table)


def head(host: bytes, target: bytes, headers: list, method: bytes = b"GET") -> Request:
    """A parsed request head, as the codec hands it to the router."""
    return Request(method, target, False, list(headers), host, True, False, -1, None, False)


def vh(name: str, domains: list[str], cluster: str = "a", **route) -> dict:
    return sc.virtual_host(name, domains, [sc.route(cluster, **route)])


DOMAINS = router([
    vh("exact", ["api.example.com"]),
    vh("exact-port", ["api.example.com:8443"]),
    vh("suffix-long", ["*.eu.example.com"]),
    vh("suffix", ["*.example.com"]),
    vh("prefix", ["api.*"]),
    vh("default", ["*"]),
])


@pytest.mark.parametrize("host,expected", [
    (b"api.example.com", "exact"),
    (b"API.Example.COM", "exact"),  # host names are case-insensitive
    (b"api.example.com:80", "exact"),  # a port is ignored when no domain names it
    (b"api.example.com:8443", "exact-port"),  # ... and used when one does
    (b"db.eu.example.com", "suffix-long"),  # the longest suffix wins
    (b"www.example.com", "suffix"),
    (b"www.example.com:8080", "suffix"),
    (b"example.com", "default"),  # "*.example.com" needs something before the dot
    (b"api.internal", "prefix"),  # exact and suffix come before prefix
    (b"api.", "default"),
    (b"other", "default"),
    (b"", "default"),
    (b"[::1]:8080", "default"),
])
def test_virtual_host_order(host, expected):
    assert DOMAINS.virtual_host(host).name == expected


def test_no_virtual_host_and_no_route():
    r = router([vh("only", ["only.example"], path="/exact")])
    assert r.route(head(b"elsewhere", b"/exact", [])) is None
    assert r.route(head(b"only.example", b"/other", [])) is None
    assert r.route(head(b"only.example", b"/exact", [])).route.cluster == "a"


def test_a_catch_all_route_takes_origin_form_targets_only_and_hosts_are_cached():
    """Prefix "/" alone is told without matches(); it still needs a target in origin
    form, as matches() would. A host with no virtual host is cached as such."""
    r = router([sc.virtual_host("all", ["*.example"], [
        sc.route("b", prefix="/", headers=[{"name": "x-canary", "exact_match": "1"}]),
        sc.route("a", prefix="/"),
    ])])
    assert r.route(head(b"h.example", b"/any/path?q=1", [])).route.cluster == "a"
    assert r.route(head(b"h.example", b"/", [(b"x-canary", b"1")])).route.cluster == "b"
    assert r.route(head(b"h.example", b"*", [])) is None
    assert r.route(head(b"h.example", b"http://h.example/", [])) is None
    for _ in range(2):  # looked up, then from the cache
        assert r.route(head(b"other", b"/", [])) is None
        assert r.route(head(b"h.example", b"/", [])).route.cluster == "a"


def test_path_matches_and_first_match_wins():
    r = router([sc.virtual_host("all", ["*"], [
        sc.route("a", path="/exact"),
        sc.route("b", regex="/items/[0-9]+"),
        sc.route("c", prefix="/items/"),
        sc.route("a", prefix="/"),
    ])])

    def cluster(target: bytes) -> str:
        return r.route(head(b"h", target, [])).route.cluster

    assert cluster(b"/exact") == "a"
    assert cluster(b"/exact?q=1") == "a"  # exact and regex ignore the query
    assert cluster(b"/items/42") == "b"
    assert cluster(b"/items/42?x=y") == "b"
    assert cluster(b"/items/42x") == "c"  # regex must match the whole path
    assert cluster(b"/items/") == "c"
    assert cluster(b"/Items/42") == "a"  # case-sensitive by default


def test_case_insensitive_routes():
    r = router([sc.virtual_host("all", ["*"], [
        {"match": {"prefix": "/API/", "case_sensitive": False}, "route": {"cluster": "b"}},
        {"match": {"path": "/Login", "case_sensitive": False}, "route": {"cluster": "c"}},
        {"match": {"safe_regex": {"regex": "/x/[a-c]+"}, "case_sensitive": False},
         "route": {"cluster": "a"}},
    ])])
    assert r.route(head(b"h", b"/api/v1", [])).route.cluster == "b"
    assert r.route(head(b"h", b"/LOGIN", [])).route.cluster == "c"
    assert r.route(head(b"h", b"/X/ABC", [])).route.cluster == "a"


def test_header_conditions():
    r = router([sc.virtual_host("all", ["*"], [
        sc.route("a", headers=[{"name": "X-Version", "exact_match": "2"},
                               {"name": "x-debug", "present_match": True, "invert_match": True}]),
        sc.route("b", headers=[{"name": "user-agent", "string_match": {"prefix": "curl/"}}]),
        sc.route("c"),
    ])])

    def cluster(headers) -> str:
        return r.route(head(b"h", b"/", headers)).route.cluster

    assert cluster([(b"x-version", b"2")]) == "a"
    assert cluster([(b"x-version", b"2"), (b"x-debug", b"1")]) == "c"  # inverted presence
    assert cluster([(b"x-version", b"3")]) == "c"
    assert cluster([(b"user-agent", b"curl/8.0")]) == "b"
    assert cluster([(b"user-agent", b"wget/1")]) == "c"
    assert cluster([]) == "c"


def test_weighted_clusters_in_proportion():
    r = router([sc.virtual_host("all", ["*"], [sc.route(weighted={"a": 10, "b": 30, "c": 60})])])
    compiled = r.route(head(b"h", b"/", []))
    random.seed(1234)
    n = 20000
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(n):
        counts[compiled.pick_cluster()] += 1
    for name, weight in (("a", 10), ("b", 30), ("c", 60)):
        p = weight / 100
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[name] - n * p) <= 4 * sd, counts
