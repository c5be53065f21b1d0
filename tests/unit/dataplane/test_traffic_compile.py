"""Traffic-management fields of a bootstrap → compiled config: each new field becomes the
plain object the request path reads, and each kind of bad value is refused with a
ConfigError naming its field path."""

from __future__ import annotations

import copy
import json

import pytest

from plait.core.errors import ConfigError
from plait.dataplane.bootstrap import parse_bootstrap
from plait.dataplane.config import (
    HashPolicy, HeaderEdit, HeaderMatch, LbPolicy, Mirror, OutlierDetection, Redirect,
    RetryBudget,
)
from plait.dataplane.filters.fault import NAME as FAULT, FaultConfig
from plait.testing import sidecar as sc

SR = "static_resources"
HCM_AT = f"{SR}.listeners[0].filter_chains[0].filters[0].typed_config"
VH_AT = f"{HCM_AT}.route_config.virtual_hosts[0]"
ROUTER_TYPE = sc.ROUTER["typed_config"]


def good() -> dict:
    """A document that uses every traffic-management field at least once."""
    match_route = sc.route(
        "a", prefix="/m", name="match",
        headers=[
            {"name": "X-Exact", "exact_match": "e"},
            {"name": "x-prefix", "prefix_match": "p"},
            {"name": "x-regex", "safe_regex_match": {"regex": "[0-9]+"}},
            {"name": "x-ci", "string_match": {"exact": "MiXeD", "ignore_case": True}},
            {"name": "x-suffix", "string_match": {"suffix": ".com"}},
            {"name": "x-contains", "string_match": {"contains": "mid"}},
            {"name": "x-present", "present_match": True},
            {"name": "x-absent", "present_match": True, "invert_match": True},
            {"name": ":method", "exact_match": "POST"},
        ],
        query=[{"name": "Variant", "string_match": {"exact": "b"}},
               {"name": "debug", "present_match": True}])
    rewrite_route = sc.route(
        "b", prefix="/r", name="rewrite", timeout=3,
        action={"regex_rewrite": {"pattern": {"regex": "^/r/v([0-9]+)/(.*)$"},
                                  "substitution": "/v\\1/\\2"},
                "host_rewrite_literal": "b.internal",
                "hash_policy": [sc.hash_header("X-User"), sc.hash_cookie("session"),
                                {"query_parameter": {"name": "User"}},
                                {"connection_properties": {"source_ip": True}}],
                "request_mirror_policies": [sc.mirror("shadow", percent=12.5),
                                            sc.mirror("a")]},
        per_filter={FAULT: sc.fault(abort_status=418, abort_percent=50)},
        request_headers_to_add=[sc.header_value("x-set", "1", append=False),
                                sc.header_value("x-add", "2"),
                                sc.header_value("x-over", "3",
                                                append_action="OVERWRITE_IF_EXISTS_OR_ADD")],
        request_headers_to_remove=["X-Secret"],
        response_headers_to_add=[sc.header_value("x-resp", "r", append=False)],
        response_headers_to_remove=["server"])
    routes = [
        match_route,
        rewrite_route,
        sc.redirect_route(name="redirect", prefix="/old/", prefix_rewrite="/new/",
                          host_redirect="example.org", port_redirect=8443,
                          https_redirect=True, response_code="TEMPORARY_REDIRECT",
                          strip_query=True),
        sc.redirect_route(name="redirect-path", path="/p", path_redirect="/q"),
        sc.direct_route(204, name="direct", path="/healthz"),
        sc.direct_route(200, "hello\n", name="direct-body", path="/hello"),
    ]
    vh = sc.virtual_host("all", ["*"], routes)
    vh["request_headers_to_add"] = [sc.header_value("x-vh", "v", append=False)]
    vh["response_headers_to_remove"] = ["x-internal"]
    listener = sc.listener("outbound", [vh], http_filters=[sc.fault_filter(
        delay=1.5, delay_percent=25, abort_status=503, abort_percent=10,
        headers=[{"name": "x-chaos", "present_match": True}])])
    clusters = [
        sc.cluster("a", [8080], lb_policy="RING_HASH",
                   ring_hash_lb_config={"minimum_ring_size": 64},
                   outlier_detection=sc.outlier_detection(
                       consecutive_5xx=3, consecutive_gateway_failure=2,
                       base_ejection_time=0.5, max_ejection_time=4,
                       max_ejection_percent=50),
                   common_lb_config={"healthy_panic_threshold": {"value": 25}},
                   circuit_breakers=sc.retry_budget(budget_percent=20,
                                                    min_retry_concurrency=1)),
        sc.cluster_by_priority("b", [[8081, 8082], [("10.0.0.9", 8083, 3)]]),
        sc.cluster("shadow", [8084]),
    ]
    return sc.bootstrap(listeners=[listener], clusters=clusters)


def compile_doc(doc: dict):
    return parse_bootstrap(json.dumps(doc)).snapshot


def routes(snap) -> dict:
    return {r.name: r for r in snap.listeners[0].route_table.default.routes}


def test_matchers_compile_to_header_and_query_conditions():
    r = routes(compile_doc(good()))["match"]
    by_name = {h.name: h for h in r.headers}
    assert by_name[b"x-exact"] == HeaderMatch(name=b"x-exact", exact=b"e")  # name lower-cased
    assert by_name[b"x-prefix"] == HeaderMatch(name=b"x-prefix", prefix=b"p")
    assert by_name[b"x-regex"].matcher.pattern == b"[0-9]+"
    ci = by_name[b"x-ci"].matcher
    assert ci.fullmatch(b"mixed") and ci.fullmatch(b"MIXED") and not ci.fullmatch(b"mixed!")
    assert by_name[b"x-suffix"].matcher.fullmatch(b"a.com") and not \
        by_name[b"x-suffix"].matcher.fullmatch(b"a.co")
    assert by_name[b"x-contains"].matcher.fullmatch(b"amidb")
    assert by_name[b"x-present"] == HeaderMatch(name=b"x-present", present=True)
    assert by_name[b"x-absent"] == HeaderMatch(name=b"x-absent", present=True, invert=True)
    assert by_name[b":method"] == HeaderMatch(name=b":method", exact=b"POST")
    # Query parameter names keep their case; a bare name means "present".
    assert r.query == (HeaderMatch(name=b"Variant", exact=b"b"),
                       HeaderMatch(name=b"debug", present=True))


def test_route_actions_compile():
    rs = routes(compile_doc(good()))
    r = rs["rewrite"]
    pattern, substitution = r.regex_rewrite
    assert pattern.sub(substitution, b"/r/v2/users") == b"/v2/users"
    assert r.host_rewrite == "b.internal" and r.timeout == 3.0
    assert r.hash_policies == (HashPolicy("header", b"x-user"), HashPolicy("cookie", b"session"),
                               HashPolicy("query_parameter", b"User"),  # case kept
                               HashPolicy("source_ip"))
    assert r.mirrors == (Mirror("shadow", 0.125), Mirror("a", 1.0))
    assert r.per_filter == {FAULT: FaultConfig(abort_status=418, abort_fraction=0.5)}
    # Route entries first, then the virtual host's (Envoy's default order of evaluation).
    assert r.request_headers == HeaderEdit(
        add=((b"x-set", b"1", False), (b"x-add", b"2", True), (b"x-over", b"3", False),
             (b"x-vh", b"v", False)),
        remove=frozenset({b"x-secret"}))
    assert r.response_headers == HeaderEdit(add=((b"x-resp", b"r", False),),
                                            remove=frozenset({b"server", b"x-internal"}))
    assert rs["redirect"].redirect == Redirect(
        status=307, scheme=b"https", host=b"example.org", port=8443, prefix_rewrite=b"/new/",
        strip_query=True)
    assert rs["redirect-path"].redirect == Redirect(path=b"/q")  # 301 by default
    assert (rs["direct"].direct_status, rs["direct"].direct_body) == (204, b"")
    assert (rs["direct-body"].direct_status, rs["direct-body"].direct_body) == (200, b"hello\n")
    assert rs["direct"].request_headers == HeaderEdit(add=((b"x-vh", b"v", False),))


def test_fault_filter_compiles_at_the_listener():
    lis = compile_doc(good()).listeners[0]
    (name, cfg), router = lis.http_filters
    assert name == FAULT and router == ("envoy.filters.http.router", None)
    assert (cfg.delay, cfg.delay_fraction, cfg.abort_status, cfg.abort_fraction) == (
        1.5, 0.25, 503, 0.1)
    assert cfg.headers == (HeaderMatch(name=b"x-chaos", present=True),)


def test_fault_percentages_default_to_all_requests():
    doc = good()
    hcm(doc)["http_filters"][0] = sc.fault_filter(delay=0.2, abort_status=500)
    (_, cfg), _ = compile_doc(doc).listeners[0].http_filters
    assert (cfg.delay_fraction, cfg.abort_fraction) == (1.0, 1.0)


def test_cluster_resilience_fields_compile():
    clusters = compile_doc(good()).clusters
    a = clusters["a"]
    assert a.lb_policy is LbPolicy.RING_HASH and a.ring_size == 64
    assert a.outlier == OutlierDetection(consecutive_5xx=3, consecutive_gateway_failure=2,
                                         base_ejection_time=0.5, max_ejection_time=4.0,
                                         max_ejection_percent=50)
    assert a.healthy_panic_threshold == 25
    assert a.retry_budget == RetryBudget(ratio=0.2, min_per_second=1.0)
    b = clusters["b"]
    assert b.outlier is None and b.healthy_panic_threshold == 50.0
    assert b.retry_budget == RetryBudget()  # always on: 20% + 10/s over 10 s
    assert [(e.port, e.priority, e.weight) for e in b.endpoints] == [
        (8081, 0, 1), (8082, 0, 1), (8083, 1, 3)]


def test_outlier_detection_defaults_are_envoys():
    doc = good()
    doc[SR]["clusters"][1]["outlier_detection"] = {}
    assert compile_doc(doc).clusters["b"].outlier == OutlierDetection(
        consecutive_5xx=5, consecutive_gateway_failure=0, interval=10.0,
        base_ejection_time=30.0, max_ejection_time=300.0, max_ejection_percent=10.0)


def test_a_retry_budget_with_only_a_percentage_keeps_the_default_floor():
    doc = good()
    doc[SR]["clusters"][1]["circuit_breakers"] = sc.retry_budget(budget_percent=50)
    assert compile_doc(doc).clusters["b"].retry_budget == RetryBudget(ratio=0.5,
                                                                      min_per_second=10.0)


# -- refusals --------------------------------------------------------------------------------

def hcm(doc: dict) -> dict:
    return doc[SR]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def route_at(doc: dict, i: int) -> dict:
    return hcm(doc)["route_config"]["virtual_hosts"][0]["routes"][i]


def header(i: int, **spec):
    def edit(doc):
        route_at(doc, 0)["match"]["headers"][i] = {"name": "x-h", **spec}
    return edit


def action(**fields):
    def edit(doc):
        route_at(doc, 1)["route"].update(fields)
    return edit


def fault_at_listener(**typed):
    def edit(doc):
        hcm(doc)["http_filters"][0]["typed_config"] = {"@type": sc.FAULT_TYPE, **typed}
    return edit


R0 = f"{VH_AT}.routes[0]"
R1 = f"{VH_AT}.routes[1]"
FAULT_AT = f"{HCM_AT}.http_filters[0].typed_config"
BAD = {
    "header regex": (header(2, safe_regex_match={"regex": "([0-9]"}),
                     f"{R0}.match.headers[2].safe_regex_match.regex"),
    "string_match regex": (header(3, string_match={"safe_regex": {"regex": "*"}}),
                           f"{R0}.match.headers[3].string_match"),
    "query parameter without name": (
        lambda d: route_at(d, 0)["match"]["query_parameters"][0].update(name=""),
        f"{R0}.match.query_parameters[0].name"),
    "query parameter regex": (
        lambda d: route_at(d, 0)["match"]["query_parameters"].__setitem__(
            1, {"name": "q", "string_match": {"safe_regex": {"regex": "(?P<"}}}),
        f"{R0}.match.query_parameters[1].string_match"),
    "regex_rewrite pattern": (
        action(regex_rewrite={"pattern": {"regex": "(["}, "substitution": "x"}),
        f"{R1}.route.regex_rewrite.pattern.regex"),
    "regex_rewrite group the pattern lacks": (
        action(regex_rewrite={"pattern": {"regex": "^/r/(.*)$"}, "substitution": "/\\2"}),
        f"{R1}.route.regex_rewrite.substitution"),
    "hash policy by filter state": (
        action(hash_policy=[{"filter_state": {"key": "k"}}]), f"{R1}.route.hash_policy[0]"),
    "hash policy by a query parameter without name": (
        action(hash_policy=[{"query_parameter": {"name": ""}}]),
        f"{R1}.route.hash_policy[0].query_parameter.name"),
    "hash policy by connection without source_ip": (
        action(hash_policy=[sc.hash_header("x"), {"connection_properties": {}}]),
        f"{R1}.route.hash_policy[1]"),
    "mirror without cluster": (
        action(request_mirror_policies=[sc.mirror("a"), {"runtime_fraction": {}}]),
        f"{R1}.route.request_mirror_policies[1].cluster"),
    "mirror to an unknown cluster": (
        action(request_mirror_policies=[sc.mirror("nowhere")]),
        f"{SR}.listeners[0].route_config"),
    "redirect with regex_rewrite": (
        lambda d: route_at(d, 3).update(redirect={
            "regex_rewrite": {"pattern": {"regex": "a"}, "substitution": "b"}}),
        f"{VH_AT}.routes[3].redirect.regex_rewrite"),
    "adding a pseudo-header": (
        lambda d: route_at(d, 1)["request_headers_to_add"].insert(
            0, sc.header_value(":path", "/x")),
        f"{R1}.request_headers_to_add[0].header.key"),
    "adding host": (
        lambda d: route_at(d, 1)["request_headers_to_add"].append(sc.header_value("Host", "x")),
        f"{R1}.request_headers_to_add[3].header.key"),
    "removing host": (
        lambda d: route_at(d, 1)["request_headers_to_remove"].append("host"),
        f"{R1}.request_headers_to_remove[1]"),
    "removing a pseudo-header": (
        lambda d: route_at(d, 1)["request_headers_to_remove"].insert(0, ":authority"),
        f"{R1}.request_headers_to_remove[0]"),
    "adding content-length": (
        lambda d: route_at(d, 1)["response_headers_to_add"].append(
            sc.header_value("Content-Length", "5")),
        f"{R1}.response_headers_to_add[1].header.key"),
    "adding transfer-encoding": (
        lambda d: route_at(d, 1)["request_headers_to_add"].append(
            sc.header_value("transfer-encoding", "chunked")),
        f"{R1}.request_headers_to_add[3].header.key"),
    "removing content-length": (
        lambda d: route_at(d, 1)["response_headers_to_remove"].append("content-length"),
        f"{R1}.response_headers_to_remove[1]"),
    "removing connection": (
        lambda d: hcm(d)["route_config"]["virtual_hosts"][0].update(
            request_headers_to_remove=["x-ok", "Connection"]),
        f"{VH_AT}.request_headers_to_remove[1]"),
    "per-route config for an unknown filter": (
        lambda d: route_at(d, 1)["typed_per_filter_config"].update(
            {"envoy.filters.http.cors": ROUTER_TYPE}),
        f"{R1}.typed_per_filter_config[envoy.filters.http.cors]"),
    "per-route config for the router": (
        lambda d: route_at(d, 1)["typed_per_filter_config"].update(
            {"envoy.filters.http.router": ROUTER_TYPE}),
        f"{R1}.typed_per_filter_config[envoy.filters.http.router]"),
    "per-route fault config of the wrong type": (
        lambda d: route_at(d, 1)["typed_per_filter_config"].update({FAULT: ROUTER_TYPE}),
        f"{R1}.typed_per_filter_config[{FAULT}]"),
    "per-route fault abort status": (
        lambda d: route_at(d, 1)["typed_per_filter_config"].update(
            {FAULT: sc.fault(abort_status=700)}),
        f"{R1}.typed_per_filter_config[{FAULT}].abort.http_status"),
    "fault delay by header": (fault_at_listener(delay={"header_delay": {}}),
                              f"{FAULT_AT}.delay.fixed_delay"),
    "fault abort by grpc status": (fault_at_listener(abort={"grpc_status": 14}),
                                   f"{FAULT_AT}.abort"),
    "fault abort status": (fault_at_listener(abort={"http_status": 99}),
                           f"{FAULT_AT}.abort.http_status"),
    "fault header regex": (
        fault_at_listener(headers=[{"name": "a"}, {"name": "b",
                                                   "safe_regex_match": {"regex": "("}}]),
        f"{FAULT_AT}.headers[1].safe_regex_match.regex"),
    "fault filter twice": (
        lambda d: hcm(d)["http_filters"].insert(0, sc.fault_filter(abort_status=500)),
        f"{HCM_AT}.http_filters[1].name"),
    "fault filter after the router": (
        lambda d: hcm(d)["http_filters"].reverse(), HCM_AT + ".http_filters"),
}


@pytest.mark.parametrize("edit,path", BAD.values(), ids=BAD.keys())
def test_bad_traffic_config_names_the_field(edit, path):
    doc = good()
    compile_doc(copy.deepcopy(doc))  # the unedited document is fine
    edit(doc)
    with pytest.raises(ConfigError) as info:
        compile_doc(doc)
    assert info.value.path == path, str(info.value)
    assert info.value.reason
