"""RateLimit, CircuitBreaker and Degrade → the sidecar's governance filters: where each
lands (callee inbound, caller routes), the global quota's division, fallbacks, and that
the sidecar's own compiler takes every config produced."""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from plait.controlplane.push import governance
from plait.controlplane.push.proxy import ProxyInfo
from plait.controlplane.push.translate import translate
from plait.dataplane import filters
from plait.dataplane.filters import circuit_breaker, rate_limit
from plait.testing.meshview import FakeMeshView, compiled_snapshot
from plait.xds.resources import LISTENER, ROUTE

RATE_LIMIT = """
apiVersion: plait.io/v1alpha1
kind: RateLimit
metadata: {name: pricing}
spec:
  service: pricing
  match: {method: GET, path: {prefix: /api/}}
  rules:
  - {key: service, limit: {requests: 10, per: 1s}, burst: 5, scope: global}
  - {key: "header:x-user", limit: {requests: 600, per: 1m}, response: {status: 503}}
"""
BREAKER = """
apiVersion: plait.io/v1alpha1
kind: CircuitBreaker
metadata: {name: pricing}
spec:
  service: pricing
  strategy: slowRequestRatio
  threshold: 0.5
  slowRequestThreshold: 200ms
  statWindow: 2s
  openDuration: 10s
  halfOpenRequests: 3
"""
DEGRADE = """
apiVersion: plait.io/v1alpha1
kind: Degrade
metadata: {name: pricing}
spec:
  service: pricing
  when: [circuitOpen, rateLimited]
  fallback:
    status: 200
    headers: {content-type: application/json, Content-Length: "3"}
    body: '{"price": null}'
"""


def pricing_mesh(*documents: str, instances: int = 3) -> FakeMeshView:
    view = FakeMeshView()
    for i in range(instances):
        view.register("pricing", f"10.0.0.{i + 1}", 8080)
    view.register("web", "10.0.1.1", 8080)
    view.apply_yaml("\n---\n".join(documents))
    return view


def pricing_proxy(number: int) -> ProxyInfo:
    """The sidecar of pricing instance `number` (node id = its registry instance id)."""
    return ProxyInfo.from_metadata(f"pricing-10.0.0.{number}:8080",
                                   {"app": "pricing", "app_port": 9000})


WEB = ProxyInfo.from_metadata("web-10.0.1.1:8080", {"app": "web", "app_port": 9000})


def compiled(view, proxy: ProxyInfo):
    out = translate(view, proxy)
    snapshot = compiled_snapshot(out)
    return out, {lis.name: lis for lis in snapshot.listeners}


def chain(listener) -> dict:
    return dict(listener.http_filters)


def hcm(out: dict, name: str) -> hcm_pb2.HttpConnectionManager:
    found = hcm_pb2.HttpConnectionManager()
    out[LISTENER][name].filter_chains[0].filters[0].typed_config.Unpack(found)
    return found


def test_the_filter_names_and_types_are_the_sidecars():
    assert governance.RATE_LIMIT_FILTER == rate_limit.NAME in filters.REGISTRY
    assert governance.RATE_LIMIT_TYPE == rate_limit.TYPE_URL
    assert governance.BREAKER_FILTER == circuit_breaker.NAME in filters.REGISTRY
    assert governance.BREAKER_TYPE == circuit_breaker.TYPE_URL


def test_a_rate_limit_is_enforced_on_the_inbound_side_of_the_service_only():
    view = pricing_mesh(RATE_LIMIT)
    out, listeners = compiled(view, pricing_proxy(1))
    names = [f.name for f in hcm(out, "inbound").http_filters]
    assert names == [governance.RATE_LIMIT_FILTER, "envoy.filters.http.fault",
                     "envoy.filters.http.router"]
    limiter = chain(listeners["inbound"])[rate_limit.NAME]
    service, per_user = limiter.rules
    assert (service.name, service.key, service.match.method, service.match.prefix) == \
        ("default/pricing/rules[0]", rate_limit.Key.SERVICE, b"GET", b"/api/")
    assert (per_user.key, per_user.header, per_user.status) == \
        (rate_limit.Key.HEADER, b"x-user", 503)
    assert (per_user.tokens_per_fill, per_user.fill_interval, per_user.max_tokens) == \
        (600, 60.0, 600)  # a local rule: the whole limit on every instance
    assert rate_limit.NAME not in chain(listeners["outbound"])
    # the caller pays nothing: neither of its listeners runs the filter
    _, web = compiled(view, WEB)
    assert rate_limit.NAME not in chain(web["inbound"]) | chain(web["outbound"])


def test_a_global_limit_is_divided_among_the_instances_and_rebalanced():
    view = pricing_mesh(RATE_LIMIT)

    def buckets(count: int) -> list[tuple[int, int]]:
        out = []
        for n in range(1, count + 1):
            rule = chain(compiled(view, pricing_proxy(n))[1]["inbound"])[rate_limit.NAME].rules[0]
            assert rule.fill_interval == 1.0
            out.append((rule.tokens_per_fill, rule.max_tokens))
        return out

    assert buckets(3) == [(4, 2), (3, 2), (3, 1)]  # 10/s and a burst of 5, over three
    view.deregister("pricing", "10.0.0.3", 8080)
    assert buckets(2) == [(5, 3), (5, 2)]
    view.register("pricing", "10.0.0.2", 8080, healthy=False)  # takes no traffic: no share
    assert buckets(1) == [(10, 5)]


def test_an_instance_not_yet_registered_gets_the_share_it_will_have():
    view = pricing_mesh(RATE_LIMIT, instances=2)
    rule = chain(compiled(view, pricing_proxy(3))[1]["inbound"])[rate_limit.NAME].rules[0]
    assert rule.tokens_per_fill == 3  # 4, 3, 3: the third of three


def test_a_share_of_zero_admits_next_to_nothing():
    view = pricing_mesh(RATE_LIMIT.replace("requests: 10,", "requests: 2,"))
    rule = chain(compiled(view, pricing_proxy(3))[1]["inbound"])[rate_limit.NAME].rules[0]
    assert (rule.tokens_per_fill, rule.max_tokens, rule.fill_interval) == (1, 1, 86_400.0)


def test_a_circuit_breaker_rides_on_every_forwarding_route_of_its_callers():
    view = pricing_mesh(BREAKER, """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pricing}
spec:
  hosts: [pricing]
  http:
  - {name: teapot, match: [{uri: {exact: /tea}}], directResponse: {status: 418}}
  - {name: api, match: [{uri: {prefix: /api}}], route: [{destination: {host: pricing}}]}
  - {name: rest, route: [{destination: {host: pricing}}]}
""")
    out, listeners = compiled(view, WEB)
    names = [f.name for f in hcm(out, "outbound").http_filters]
    assert names == [governance.BREAKER_FILTER, "envoy.filters.http.fault",
                     "envoy.filters.http.router"]
    routes = {r.name: r for r in listeners["outbound"].route_table.exact["pricing"].routes}
    assert circuit_breaker.NAME not in routes["teapot"].per_filter
    (breaker,) = routes["api"].per_filter[circuit_breaker.NAME].breakers
    assert breaker == routes["rest"].per_filter[circuit_breaker.NAME].breakers[0]
    assert (breaker.name, breaker.strategy, breaker.threshold, breaker.slow_threshold,
            breaker.window, breaker.open_duration, breaker.half_open_requests,
            breaker.min_requests, breaker.service) == (
        "default/pricing", circuit_breaker.Strategy.SLOW_REQUEST_RATIO, 0.5, 0.2, 2.0, 10.0,
        3, 5, "pricing")
    assert breaker.fallback is None


def test_only_callers_of_a_guarded_service_run_the_breaker_filter():
    view = pricing_mesh(BREAKER)
    view.register("stock", "10.0.2.1", 8080)
    stock_only = ProxyInfo.from_metadata("w", {"app": "web", "dependencies": ["stock"]})
    _, listeners = compiled(view, stock_only)
    assert circuit_breaker.NAME not in chain(listeners["outbound"])
    # the guarded service's own inbound side is not a caller
    _, listeners = compiled(view, pricing_proxy(1))
    assert circuit_breaker.NAME not in chain(listeners["inbound"])
    # a proxyless client has no such filter and gets no such config
    out = translate(view, ProxyInfo(node_id="g"), listener_names=frozenset({"pricing"}))
    assert not out[ROUTE]["pricing"].virtual_hosts[0].routes[0].typed_per_filter_config


def test_a_degrade_is_the_fallback_of_both_refusals():
    view = pricing_mesh(RATE_LIMIT, BREAKER, DEGRADE)
    _, listeners = compiled(view, pricing_proxy(1))
    for rule in chain(listeners["inbound"])[rate_limit.NAME].rules:
        assert rule.fallback.status == 200 and rule.fallback.body == b'{"price": null}'
        # headers the sidecar sets itself are dropped; the cause stays visible
        assert rule.fallback.headers == ((b"content-type", b"application/json"),
                                         (b"x-plait-error", b"rate_limited"))
    _, listeners = compiled(view, WEB)
    (route,) = listeners["outbound"].route_table.exact["pricing"].routes
    (breaker,) = route.per_filter[circuit_breaker.NAME].breakers
    assert breaker.fallback.headers[-1] == (b"x-plait-error", b"circuit_open")


def test_a_degrade_with_a_match_applies_only_to_rules_with_the_same_match():
    narrow = DEGRADE.replace("  when:", "  match: {method: POST}\n  when:")
    view = pricing_mesh(RATE_LIMIT, BREAKER, narrow)
    _, listeners = compiled(view, pricing_proxy(1))
    assert all(r.fallback is None for r in chain(listeners["inbound"])[rate_limit.NAME].rules)
    same = DEGRADE.replace("  when:", "  match: {method: GET, path: {prefix: /api/}}\n  when:")
    view = pricing_mesh(RATE_LIMIT, BREAKER, same)
    _, listeners = compiled(view, pricing_proxy(1))
    assert all(r.fallback is not None
               for r in chain(listeners["inbound"])[rate_limit.NAME].rules)
    _, listeners = compiled(view, WEB)  # the breaker has no match: not the same
    (route,) = listeners["outbound"].route_table.exact["pricing"].routes
    assert route.per_filter[circuit_breaker.NAME].breakers[0].fallback is None


def test_values_outside_the_sidecars_ranges_are_brought_into_them():
    view = pricing_mesh(
        BREAKER.replace("statWindow: 2s", "statWindow: 1ms").replace("openDuration: 10s",
                                                                    "openDuration: 48h"),
        RATE_LIMIT.replace("per: 1m", "per: 48h"))
    _, listeners = compiled(view, WEB)
    (route,) = listeners["outbound"].route_table.exact["pricing"].routes
    (breaker,) = route.per_filter[circuit_breaker.NAME].breakers
    assert (breaker.window, breaker.open_duration) == (0.01, 86_400.0)
    _, listeners = compiled(view, pricing_proxy(1))
    per_user = chain(listeners["inbound"])[rate_limit.NAME].rules[1]
    assert (per_user.tokens_per_fill, per_user.fill_interval) == (300, 86_400.0)  # same rate
