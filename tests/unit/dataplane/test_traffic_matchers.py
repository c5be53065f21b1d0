"""Header, pseudo-header and query-parameter conditions, with Envoy's HeaderMatcher and
StringMatcher semantics, and the router choosing the first route whose conditions all hold."""

from __future__ import annotations

import json

import pytest
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.type.matcher.v3 import string_pb2

from plait.codec.http1 import Request
from plait.core.errors import ConfigError
from plait.dataplane.bootstrap import parse_bootstrap
from plait.dataplane.matchers import header_match, query_match
from plait.dataplane.router import Router, headers_match, query_params_match
from plait.testing import sidecar as sc


def req(headers=(), *, method=b"GET", target=b"/", host=b"svc") -> Request:
    """A parsed request head, as the codec hands it on (lower-case header names)."""
    return Request(method, target, False, list(headers), host, True, False, -1, None, False)


def hm(name="x-h", **spec) -> route_pb2.HeaderMatcher:
    return route_pb2.HeaderMatcher(name=name, **spec)


def sm(**spec) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(**spec)


def holds(matcher: route_pb2.HeaderMatcher, request: Request) -> bool:
    return headers_match((header_match(matcher, "m"),), request)


H = [(b"x-h", b"Hello-World")]
CASES = {
    # name: (matcher, headers, expected)
    "exact": (hm(exact_match="Hello-World"), H, True),
    "exact is case-sensitive": (hm(exact_match="hello-world"), H, False),
    "prefix": (hm(prefix_match="Hello"), H, True),
    "prefix miss": (hm(prefix_match="World"), H, False),
    "regex is a full match": (hm(safe_regex_match={"regex": "Hello"}), H, False),
    "regex": (hm(safe_regex_match={"regex": "Hello-.*"}), H, True),
    "string exact": (hm(string_match=sm(exact="Hello-World")), H, True),
    "string exact, ignore case": (hm(string_match=sm(exact="HELLO-world", ignore_case=True)),
                                  H, True),
    "string exact, case matters": (hm(string_match=sm(exact="HELLO-world")), H, False),
    "string prefix": (hm(string_match=sm(prefix="Hell")), H, True),
    "string prefix, ignore case": (hm(string_match=sm(prefix="hell", ignore_case=True)), H,
                                   True),
    "string suffix": (hm(string_match=sm(suffix="World")), H, True),
    "string suffix miss": (hm(string_match=sm(suffix="world")), H, False),
    "string suffix, ignore case": (hm(string_match=sm(suffix="WORLD", ignore_case=True)), H,
                                   True),
    "string contains": (hm(string_match=sm(contains="o-W")), H, True),
    "string contains is literal": (hm(string_match=sm(contains="o.W")), H, False),
    "string regex": (hm(string_match=sm(safe_regex={"regex": "[A-Z][a-z]+-[A-Z].*"})), H,
                     True),
    # Envoy: ignore_case "has no effect for the safe_regex match".
    "string regex ignores ignore_case": (
        hm(string_match=sm(safe_regex={"regex": "hello-world"}, ignore_case=True)), H, False),
    "present": (hm(present_match=True), H, True),
    "present, absent": (hm(name="x-other", present_match=True), H, False),
    "present false means absent": (hm(name="x-other", present_match=False), H, True),
    "no specifier means present": (hm(), H, True),
    "inverted exact": (hm(exact_match="nope", invert_match=True), H, True),
    "inverted exact that matches": (hm(exact_match="Hello-World", invert_match=True), H, False),
    "inverted present is absent": (hm(name="x-other", present_match=True, invert_match=True),
                                   H, True),
    # Envoy: a value condition on an absent header fails, inverted or not (only
    # present_match turns absence into a match).
    "inverted exact, header absent": (hm(name="x-other", exact_match="a", invert_match=True),
                                      H, False),
    "inverted regex, header absent": (
        hm(name="x-other", safe_regex_match={"regex": "a"}, invert_match=True), H, False),
    "repeated header values are joined with commas": (
        hm(exact_match="a,b"), [(b"x-h", b"a"), (b"x-h", b"b")], True),
    "string contains, ignore case": (hm(string_match=sm(contains="O-w", ignore_case=True)), H,
                                     True),
    "string suffix, metacharacters are literal": (hm(string_match=sm(suffix=".+")),
                                                  [(b"x-h", b"a.+")], True),
    # Envoy folds ASCII letters only: "É" and "é" stay different
    "string exact, ignore case folds ASCII only": (
        hm(string_match=sm(exact="CAFÉ", ignore_case=True)), [(b"x-h", "café".encode())], False),
    "string exact, ignore case, non-ASCII kept": (
        hm(string_match=sm(exact="CAFé", ignore_case=True)), [(b"x-h", "café".encode())], True),
}



@pytest.mark.parametrize("matcher,headers,expected", CASES.values(), ids=CASES.keys())
def test_header_conditions(matcher, headers, expected):
    assert holds(matcher, req(headers)) is expected


def test_header_names_are_case_insensitive():
    assert holds(hm(name="X-H", exact_match="Hello-World"), req(H))


@pytest.mark.parametrize("matcher,expected", [
    (hm(name=":method", exact_match="POST"), True),
    (hm(name=":method", exact_match="GET"), False),
    (hm(name=":authority", exact_match="api.example:8080"), True),
    (hm(name=":authority", string_match=sm(prefix="api.")), True),
    (hm(name=":path", exact_match="/items/7?full=1"), True),  # :path includes the query
    (hm(name=":path", prefix_match="/items/"), True),
    (hm(name=":scheme", present_match=True), False),  # not a pseudo-header we know
])
def test_pseudo_headers_match_the_request_line_and_host(matcher, expected):
    request = req(method=b"POST", target=b"/items/7?full=1", host=b"api.example:8080")
    assert holds(matcher, request) is expected


def test_authority_of_a_request_without_host_is_absent():
    assert holds(hm(name=":authority", present_match=False), req(host=b""))


def qm(name: str, **spec) -> route_pb2.QueryParameterMatcher:
    return route_pb2.QueryParameterMatcher(name=name, **spec)


@pytest.mark.parametrize("matcher,target,expected", [
    (qm("v", string_match=sm(exact="b")), b"/p?v=b", True),
    (qm("v", string_match=sm(exact="b")), b"/p?a=1&v=b&c", True),
    (qm("v", string_match=sm(exact="b")), b"/p?v=c", False),
    (qm("v", string_match=sm(exact="b")), b"/p", False),
    (qm("v", string_match=sm(exact="b c")), b"/p?v=b%20c", True),  # values are decoded
    (qm("v", string_match=sm(exact="B", ignore_case=True)), b"/p?v=b", True),
    (qm("v", string_match=sm(exact="b")), b"/p?v=b&v=c", True),  # the first value counts
    (qm("v"), b"/p?v", True),  # a bare name means "present"
    (qm("v"), b"/p?w=v", False),
    (qm("v", present_match=True), b"/p?v=", True),
    (qm("V"), b"/p?v=1", False),  # names are case-sensitive
])
def test_query_parameter_conditions(matcher, target, expected):
    assert query_params_match((query_match(matcher, "q"),), target) is expected


def test_bad_regexes_name_the_field():
    with pytest.raises(ConfigError) as info:
        header_match(hm(safe_regex_match={"regex": "(a"}), "m.headers[0]")
    assert info.value.path == "m.headers[0].safe_regex_match.regex"
    with pytest.raises(ConfigError) as info:
        query_match(qm("v", string_match=sm(safe_regex={"regex": "[a"})), "m.query[0]")
    assert info.value.path == "m.query[0].string_match"


# -- the router: first route whose path, headers and query all hold --------------------------

def router(routes: list[dict]) -> Router:
    doc = sc.bootstrap(listeners=[sc.listener("l", [sc.virtual_host("all", ["*"], routes)])],
                       clusters=[sc.cluster(n, [1000 + i]) for i, n in enumerate("abcd")])
    return Router(parse_bootstrap(json.dumps(doc)).snapshot.listeners[0].route_table)


ROUTER = router([
    sc.route("b", name="post", headers=[{"name": ":method", "exact_match": "POST"}]),
    sc.route("c", name="gold", headers=[{"name": "x-tier", "exact_match": "gold"},
                                        {"name": "x-block", "present_match": True,
                                         "invert_match": True}]),
    sc.route("c", name="query", query=[{"name": "variant", "string_match": {"exact": "c"}}]),
    sc.route("d", name="regex", regex="/items/[0-9]+"),
    sc.route("a", name="default"),
])


@pytest.mark.parametrize("request_,expected", [
    (req(method=b"POST"), "post"),
    (req([(b"x-tier", b"gold")], method=b"POST"), "post"),  # first match wins
    (req([(b"x-tier", b"gold")]), "gold"),
    (req([(b"x-tier", b"gold"), (b"x-block", b"1")]), "default"),  # every condition must hold
    (req(target=b"/any?variant=c"), "query"),
    (req(target=b"/any?variant=cc"), "default"),
    (req(target=b"/items/42"), "regex"),
    (req(target=b"/items/42?x=1"), "regex"),  # a path regex ignores the query
    (req(target=b"/items/x"), "default"),
])
def test_first_route_whose_conditions_hold(request_, expected):
    assert ROUTER.route(request_).route.name == expected


def test_compiled_conditions_survive_pickling_to_the_workers():
    import pickle

    conditions = [header_match(m, "m") for m in (
        hm(string_match=sm(contains="O-w", ignore_case=True)),
        hm(string_match=sm(suffix="World")),
        hm(safe_regex_match={"regex": "Hello-.*"}),
        hm(exact_match="Hello-World"))]
    copies = pickle.loads(pickle.dumps(conditions, protocol=pickle.HIGHEST_PROTOCOL))
    assert copies == conditions
    assert [headers_match((c,), req(H)) for c in copies] == [True] * 4
