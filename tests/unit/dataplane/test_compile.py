"""Bootstrap → compiled config: a good document becomes plain objects, and every kind of
bad document is refused with a ConfigError naming the field path."""

from __future__ import annotations

import copy
import json

import pytest

from plait.core.errors import ConfigError
from plait.dataplane.bootstrap import parse_bootstrap
from plait.dataplane.config import (
    ClusterConfig, Direction, Endpoint, HeaderMatch, LbPolicy, PathMatchKind, RetryPolicy,
    WeightedCluster,
)
from plait.testing import sidecar as sc

SR = "static_resources"
HCM_AT = f"{SR}.listeners[0].filter_chains[0].filters[1].typed_config"


def good() -> dict:
    routes = [
        sc.route("api", prefix="/api/", timeout=2.5,
                 retry=sc.retry_policy("5xx,connect-failure", num_retries=3,
                                       per_try_timeout=0.5, base_interval=0.1,
                                       retriable_status_codes=[409]),
                 headers=[{"name": "X-Canary", "exact_match": "yes"}], name="api"),
        sc.route(path="/split", weighted={"api": 30, "web": 70}, name="split"),
        sc.route("web", regex="/static/[a-z]+\\.css", name="css"),
    ]
    return sc.bootstrap(
        listeners=[sc.listener("outbound", [sc.virtual_host("all", ["*", "a.example"], routes)],
                               port=15001, max_request_headers_kb=8, request_headers_timeout=1,
                               connection_limit=10)],
        clusters=[sc.cluster("api", [8080, ("10.0.0.2", 9090, 3)], lb_policy="LEAST_REQUEST",
                             connect_timeout=0.25),
                  sc.cluster("web", [8081])], node="n1")


def compile_doc(doc: dict):
    return parse_bootstrap(json.dumps(doc)).snapshot


def test_good_bootstrap_compiles_to_plain_objects():
    snap = compile_doc(good())
    assert snap.node_id == "n1" and snap.admin_port == 0
    [lis] = snap.listeners
    assert (lis.name, lis.host, lis.port, lis.direction) == (
        "outbound", "127.0.0.1", 15001, Direction.OUTBOUND)
    assert lis.max_request_headers_bytes == 8 * 1024
    assert lis.request_headers_timeout == 1.0 and lis.connection_limit == 10
    assert lis.http_filters == (("envoy.filters.http.router", None),)
    table = lis.route_table
    assert set(table.exact) == {"a.example"} and table.default is not None
    api, split, css = table.default.routes
    assert (api.name, api.path_kind, api.path, api.cluster, api.timeout) == (
        "api", PathMatchKind.PREFIX, "/api/", "api", 2.5)
    assert api.headers == (HeaderMatch(name=b"x-canary", exact=b"yes"),)
    assert api.retry == RetryPolicy(
        retry_on=frozenset({"5xx", "connect-failure"}), num_retries=3, per_try_timeout=0.5,
        base_interval=0.1, max_interval=1.0, retriable_status_codes=frozenset({409}))
    assert split.path_kind is PathMatchKind.EXACT and split.weighted_clusters == (
        WeightedCluster("api", 30), WeightedCluster("web", 70))
    assert css.path_kind is PathMatchKind.REGEX and css.retry is None
    assert css.timeout == 15.0  # Envoy's default route timeout
    assert snap.clusters["api"] == ClusterConfig(
        name="api", lb_policy=LbPolicy.LEAST_REQUEST, connect_timeout=0.25,
        endpoints=(Endpoint("127.0.0.1", 8080, 1), Endpoint("10.0.0.2", 9090, 3)))
    assert snap.clusters["web"].lb_policy is LbPolicy.ROUND_ROBIN


@pytest.mark.parametrize("predicate", [
    {"name": "envoy.retry_host_predicates.previous_hosts"},
    {"name": "any", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host"
                                              ".previous_hosts.v3.PreviousHostsPredicate"}},
])
def test_the_previous_hosts_retry_predicate_by_name_or_type(predicate):
    doc = good()
    first_route(doc)["route"]["retry_policy"].update(retry_host_predicate=[predicate],
                                                     host_selection_retry_max_attempts=5)
    retry = compile_doc(doc).listeners[0].route_table.default.routes[0].retry
    assert (retry.previous_hosts, retry.host_selection_attempts) == (True, 5)
    plain = compile_doc(good()).listeners[0].route_table.default.routes[0].retry
    assert (plain.previous_hosts, plain.host_selection_attempts) == (False, 1)  # Envoy's


def test_yaml_example_compiles():
    with open("examples/sidecar-static.yaml", encoding="utf-8") as fh:
        snap = parse_bootstrap(fh.read()).snapshot
    assert [l.name for l in snap.listeners] == ["outbound", "inbound"]
    assert snap.listeners[1].direction is Direction.INBOUND


def hcm(doc: dict) -> dict:
    return doc[SR]["listeners"][0]["filter_chains"][0]["filters"][1]["typed_config"]


def first_route(doc: dict) -> dict:
    return hcm(doc)["route_config"]["virtual_hosts"][0]["routes"][0]


def _set(path: list, value):
    def edit(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


LIS = [SR, "listeners", 0]
CLUSTER0 = [SR, "clusters", 0]
EP0 = CLUSTER0 + ["load_assignment", "endpoints", 0, "lb_endpoints", 0, "endpoint", "address",
                  "socket_address"]
BAD = {
    "unknown field": (
        lambda d: d[SR]["clusters"][0].update(colour="blue"),
        f"{SR}.clusters[0].colour"),
    "duplicate cluster": (
        lambda d: d[SR]["clusters"].append(copy.deepcopy(d[SR]["clusters"][0])),
        f"{SR}.clusters[2].name"),
    "duplicate listener": (
        lambda d: d[SR]["listeners"].append(copy.deepcopy(d[SR]["listeners"][0])),
        f"{SR}.listeners[1].name"),
    "route to unknown cluster": (
        lambda d: first_route(d)["route"].update(cluster="nowhere"),
        f"{SR}.listeners[0].route_config"),
    "bad regex": (
        lambda d: first_route(d).update(match={"safe_regex": {"regex": "(unclosed"}}),
        f"{HCM_AT}.route_config.virtual_hosts[0].routes[0].match.safe_regex.regex"),
    "regex RE2 refuses (a backreference), as Envoy would": (
        lambda d: first_route(d).update(match={"safe_regex": {"regex": r"/(a)\1"}}),
        f"{HCM_AT}.route_config.virtual_hosts[0].routes[0].match.safe_regex.regex"),
    "header regex RE2 refuses (a lookahead)": (
        lambda d: first_route(d).update(match={"prefix": "/", "headers": [
            {"name": "x-a", "safe_regex_match": {"regex": "a(?=b)"}}]}),
        f"{HCM_AT}.route_config.virtual_hosts[0].routes[0].match.headers[0]"
        ".safe_regex_match.regex"),
    "no path specifier": (
        lambda d: first_route(d).update(match={}),
        f"{HCM_AT}.route_config.virtual_hosts[0].routes[0].match"),
    "weights sum to zero": (
        lambda d: [w.update(weight=0) for w in hcm(d)["route_config"]["virtual_hosts"][0]
                   ["routes"][1]["route"]["weighted_clusters"]["clusters"]],
        f"{HCM_AT}.route_config.virtual_hosts[0].routes[1].route.weighted_clusters"),
    "unknown retry condition": (
        lambda d: first_route(d)["route"]["retry_policy"].update(retry_on="5xx,sometimes"),
        f"{HCM_AT}.route_config.virtual_hosts[0].routes[0].route.retry_policy.retry_on"),
    "unsupported retry host predicate": (
        lambda d: first_route(d)["route"]["retry_policy"].update(
            retry_host_predicate=[{"name": "envoy.retry_host_predicates.omit_canary_hosts"}]),
        f"{HCM_AT}.route_config.virtual_hosts[0].routes[0].route.retry_policy"
        ".retry_host_predicate[0]"),
    "zero back-off": (
        lambda d: first_route(d)["route"]["retry_policy"].update(
            retry_back_off={"base_interval": "0s"}),
        f"{HCM_AT}.route_config.virtual_hosts[0].routes[0].route.retry_policy"
        ".retry_back_off.base_interval"),
    "direct response status": (
        lambda d: first_route(d).pop("route") and first_route(d).update(
            direct_response={"status": 99}),
        f"{HCM_AT}.route_config.virtual_hosts[0].routes[0].direct_response.status"),
    "virtual host without domains": (
        lambda d: hcm(d)["route_config"]["virtual_hosts"][0].update(domains=[]),
        f"{HCM_AT}.route_config.virtual_hosts[0].domains"),
    "domain twice": (
        lambda d: hcm(d)["route_config"]["virtual_hosts"][0].update(domains=["a", "A"]),
        f"{HCM_AT}.route_config.virtual_hosts[0].domains"),
    "endpoint port zero": (_set(EP0 + ["port_value"], 0), f"{SR}.clusters[0].load_assignment"
                           ".endpoints[0].lb_endpoints[0].endpoint.address.socket_address"
                           ".port_value"),
    "endpoint without address": (_set(EP0 + ["address"], ""), f"{SR}.clusters[0]"
                                 ".load_assignment.endpoints[0].lb_endpoints[0].endpoint"
                                 ".address.socket_address.address"),
    "cluster without name": (_set(CLUSTER0 + ["name"], ""), f"{SR}.clusters[0].name"),
    "unknown transport socket": (
        lambda d: d[SR]["clusters"][0].update(transport_socket={"name": "tls"}),
        f"{SR}.clusters[0].transport_socket.name"),
    "unknown lb policy": (_set(CLUSTER0 + ["lb_policy"], "MAGLEV"), f"{SR}.clusters[0].lb_policy"),
    "listener without address": (
        lambda d: d[SR]["listeners"][0].pop("address"),
        f"{SR}.listeners[0].address.socket_address.address"),
    "two filter chains": (
        lambda d: d[SR]["listeners"][0]["filter_chains"].append(
            copy.deepcopy(d[SR]["listeners"][0]["filter_chains"][0])),
        f"{SR}.listeners[0].filter_chains"),
    "unknown network filter": (
        lambda d: d[SR]["listeners"][0]["filter_chains"][0]["filters"][0].update(
            name="envoy.filters.network.tcp_proxy"),
        f"{SR}.listeners[0].filter_chains[0].filters[0].name"),
    "no http connection manager": (
        lambda d: d[SR]["listeners"][0]["filter_chains"][0]["filters"].pop(),
        f"{SR}.listeners[0].filter_chains[0].filters"),
    "no routes at all": (lambda d: hcm(d).pop("route_config"), HCM_AT),
    "unknown http filter": (
        lambda d: hcm(d)["http_filters"].insert(0, {"name": "envoy.filters.http.lua"}),
        f"{HCM_AT}.http_filters[0].name"),
    "router not last": (
        lambda d: hcm(d)["http_filters"].append({"name": "envoy.filters.http.router"}),
        f"{HCM_AT}.http_filters[1].name"),
    "wrong type for a port": (
        _set(EP0 + ["port_value"], "eighty"),
        f"{SR}.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address"
        ".socket_address.port_value"),
}


@pytest.mark.parametrize("edit,path", BAD.values(), ids=BAD.keys())
def test_bad_bootstrap_names_the_field(edit, path):
    doc = good()
    edit(doc)
    with pytest.raises(ConfigError) as info:
        compile_doc(doc)
    assert info.value.path == path, str(info.value)
    assert info.value.reason


@pytest.mark.parametrize("text", ["", "[1, 2]", "a: [unclosed", "static_resources: 7"])
def test_unreadable_documents_are_config_errors(text):
    with pytest.raises(ConfigError):
        parse_bootstrap(text)
