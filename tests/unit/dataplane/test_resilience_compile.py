"""Bootstrap → resilience config: Envoy's circuit breaker thresholds and health checks, the
governance filters' TypedStruct configs on listeners and routes, and the sidecar's app."""

from __future__ import annotations

import pytest

from plait.core.errors import ConfigError
from plait.dataplane.bootstrap import parse_bootstrap
from plait.dataplane.config import HealthCheck, PoolLimits
from plait.dataplane.filters import circuit_breaker, rate_limit
from plait.testing import sidecar as sc

CLUSTER = "static_resources.clusters[0]"
TS = "type.googleapis.com/xds.type.v3.TypedStruct"


def doc(**cluster_extra) -> dict:
    return sc.bootstrap(listeners=[sc.listener("out", [sc.virtual_host("v", ["*"],
                                                                       [sc.route("c")])])],
                        clusters=[sc.cluster("c", [8080], **cluster_extra)])


def cluster_of(document):
    return parse_bootstrap(document).snapshot.clusters["c"]


def test_thresholds_default_to_envoys_and_only_priority_default_counts():
    assert cluster_of(doc()).limits == PoolLimits(1024, 1024, 1024, 3)
    c = cluster_of(doc(circuit_breakers={"thresholds": [
        {"priority": "HIGH", "max_connections": 1},
        {"max_connections": 5, "max_pending_requests": 6, "max_retries": 0}]}))
    assert c.limits == PoolLimits(max_connections=5, max_pending_requests=6,
                                  max_requests=1024, max_retries=0)


def test_health_checks_http_and_tcp():
    http = cluster_of(doc(health_checks=[{
        "timeout": "1s", "interval": "5s", "unhealthy_threshold": 3, "healthy_threshold": 2,
        "http_health_check": {"path": "/healthz", "host": "svc",
                              "expected_statuses": [{"start": 200, "end": 300}]}}]))
    assert http.health_check == HealthCheck(interval=5, timeout=1, unhealthy_threshold=3,
                                            healthy_threshold=2, http_path="/healthz",
                                            http_host="svc", expected=((200, 300),))
    tcp = cluster_of(doc(health_checks=[{"timeout": "1s", "interval": "2s",
                                         "unhealthy_threshold": 1, "healthy_threshold": 1,
                                         "tcp_health_check": {}}]))
    assert tcp.health_check.http_path == "" and tcp.health_check.expected == ((200, 400),)


BASE_HC = {"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1}


@pytest.mark.parametrize("checks,path", [
    ([{**BASE_HC, "tcp_health_check": {}}] * 2, f"{CLUSTER}.health_checks"),
    ([{"timeout": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1,
       "tcp_health_check": {}}], f"{CLUSTER}.health_checks[0].interval"),
    ([{**BASE_HC, "interval": "0s", "tcp_health_check": {}}],
     f"{CLUSTER}.health_checks[0].interval"),
    ([{**BASE_HC, "http_health_check": {"path": ""}}],
     f"{CLUSTER}.health_checks[0].http_health_check.path"),
    ([{**BASE_HC, "http_health_check": {"path": "/", "expected_statuses": [
        {"start": 300, "end": 200}]}}],
     f"{CLUSTER}.health_checks[0].http_health_check.expected_statuses[0]"),
    ([{**BASE_HC, "tcp_health_check": {"send": {"text": "00"}}}],
     f"{CLUSTER}.health_checks[0].tcp_health_check"),
    ([{**BASE_HC, "grpc_health_check": {}}], f"{CLUSTER}.health_checks[0]"),
])
def test_bad_health_checks_name_the_field(checks, path):
    with pytest.raises(ConfigError) as info:
        parse_bootstrap(doc(health_checks=checks))
    assert info.value.path == path


def governed(listener_filters: list, per_route: dict | None = None) -> dict:
    d = doc()
    hcm = d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][-1]["typed_config"]
    hcm["http_filters"] = [*listener_filters, sc.ROUTER]
    if per_route is not None:
        hcm["route_config"]["virtual_hosts"][0]["routes"][0]["typed_per_filter_config"] = per_route
    return d


RL_VALUE = {"rules": [{"name": "r", "tokensPerFill": 5, "fillIntervalMs": 1000}]}
CB_VALUE = {"breakers": [{"name": "b", "strategy": "errorRatio", "threshold": 0.5,
                          "openDurationMs": 1000}]}


def test_governance_filters_on_the_listener_and_per_route():
    d = governed([{"name": rate_limit.NAME, "typed_config": {
                      "@type": TS, "type_url": rate_limit.TYPE_URL, "value": RL_VALUE}},
                  {"name": circuit_breaker.NAME}],
                 {circuit_breaker.NAME: {"@type": TS, "type_url": circuit_breaker.TYPE_URL,
                                         "value": CB_VALUE}})
    snap = parse_bootstrap(d).snapshot
    chain = dict(snap.listeners[0].http_filters)
    assert chain[rate_limit.NAME].rules[0].tokens_per_fill == 5
    assert chain[circuit_breaker.NAME] is None
    route = snap.listeners[0].route_table.virtual_hosts[0].routes[0]
    assert route.per_filter[circuit_breaker.NAME].breakers[0].name == "b"


def test_a_governance_config_of_the_wrong_kind_is_refused():
    d = governed([{"name": rate_limit.NAME, "typed_config": {
        "@type": TS, "type_url": circuit_breaker.TYPE_URL, "value": CB_VALUE}}])
    with pytest.raises(ConfigError) as info:
        parse_bootstrap(d)
    assert info.value.path.endswith("http_filters[0].typed_config.type_url")


def test_the_sidecar_knows_its_app():
    d = doc()
    d["node"]["metadata"] = {"app": "web", "telemetry_interval": 2}
    boot = parse_bootstrap(d)
    assert (boot.app, boot.telemetry_interval) == ("web", 2.0)
    d["node"]["metadata"]["telemetry_interval"] = 0
    with pytest.raises(ConfigError) as info:
        parse_bootstrap(d)
    assert info.value.path == "node.metadata.telemetry_interval"
