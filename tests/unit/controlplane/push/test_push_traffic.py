"""VirtualService and DestinationRule fields beyond the basics: per-destination headers,
caller conditions (`match.port`, `sourceNamespace`, `gateways`), mirroring, consistent
hashing and the cluster policy knobs. Every translation here is also compiled by the
sidecar's own compiler, so "translated" means "the sidecar takes it"."""

from __future__ import annotations

import re

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2

from plait.controlplane.push.proxy import ProxyInfo
from plait.controlplane.push.translate import translate
from plait.dataplane.config import HashPolicy
from plait.testing.meshview import FakeMeshView, compiled_snapshot
from plait.xds.resources import CLUSTER, ROUTE

Cluster = cluster_pb2.Cluster
SET = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
ADD = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD

SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pricing}
spec:
  host: pricing
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def pricing_mesh(yaml_text: str = "") -> FakeMeshView:
    view = FakeMeshView()
    view.register("pricing", "10.0.0.1", 8080, version="v1")
    view.register("pricing", "10.0.0.2", 8080, version="v2")
    view.register("pricing", "10.0.0.3", 9090, version="v2")  # a second port
    if yaml_text:
        view.apply_yaml(yaml_text)
    return view


def virtual_service(http: str) -> str:
    return f"""
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pricing}}
spec:
  hosts: [pricing]
  http:
{http}"""


def sidecar(view, **meta) -> dict:
    out = translate(view, ProxyInfo.from_metadata("web-1", {"app": "web", **meta}))
    compiled_snapshot(out)
    return out


def pricing_routes(out: dict) -> list:
    (host,) = [v for v in out[ROUTE]["outbound"].virtual_hosts if v.name == "pricing"]
    return list(host.routes)


def edits(options) -> list[tuple[str, str, int]]:
    return [(o.header.key, o.header.value, o.append_action) for o in options]


def test_one_destination_headers_join_the_route_after_the_entry_own():
    view = pricing_mesh(SUBSETS + virtual_service("""
  - headers:
      request: {set: {x-entry: a}, remove: [x-secret]}
    route:
    - destination: {host: pricing, subset: v1}
      headers:
        request: {add: {x-dest: b}}
        response: {set: {x-served-by: v1}, remove: [server]}
"""))
    (route,) = pricing_routes(sidecar(view))
    assert edits(route.request_headers_to_add) == [("x-entry", "a", SET), ("x-dest", "b", ADD)]
    assert list(route.request_headers_to_remove) == ["x-secret"]
    assert edits(route.response_headers_to_add) == [("x-served-by", "v1", SET)]
    assert list(route.response_headers_to_remove) == ["server"]


def test_several_destinations_keep_their_headers_on_their_weighted_cluster():
    view = pricing_mesh(SUBSETS + virtual_service("""
  - route:
    - destination: {host: pricing, subset: v1}
      weight: 80
      headers: {response: {set: {x-track: stable}}}
    - destination: {host: pricing, subset: v2}
      weight: 20
      headers: {request: {set: {x-track: canary}}}
"""))
    (route,) = pricing_routes(sidecar(view))
    stable, canary = route.route.weighted_clusters.clusters
    assert edits(stable.response_headers_to_add) == [("x-track", "stable", SET)]
    assert edits(canary.request_headers_to_add) == [("x-track", "canary", SET)]
    assert not route.request_headers_to_add and not route.response_headers_to_add


def test_match_port_is_a_condition_on_the_authority_for_sidecars():
    view = pricing_mesh(SUBSETS + virtual_service("""
  - match: [{port: 9090}]
    route: [{destination: {host: pricing, subset: v2, port: {number: 9090}}}]
  - match: [{port: 8080, uri: {prefix: /api/}}]
    route: [{destination: {host: pricing, subset: v1}}]
  - route: [{destination: {host: pricing}}]
"""))
    routes = pricing_routes(sidecar(view))
    other, default, _ = routes
    (authority,) = other.match.headers
    assert authority.name == ":authority"
    pattern = authority.string_match.safe_regex.regex
    assert re.fullmatch(pattern, "pricing:9090") and re.fullmatch(pattern, "PRICING:9090")
    assert not re.fullmatch(pattern, "pricing") and not re.fullmatch(pattern, "pricing:8080")
    # 8080 is the port a bare "pricing" goes to (two of three instances use it)
    pattern = default.match.headers[0].string_match.safe_regex.regex
    assert re.fullmatch(pattern, "pricing") and re.fullmatch(pattern, "pricing:8080")
    assert not re.fullmatch(pattern, "pricing:9090")
    assert other.route.cluster == "outbound|9090|v2|pricing"


def test_match_port_is_decided_for_proxyless_clients_by_the_port_they_named():
    view = pricing_mesh(SUBSETS + virtual_service("""
  - match: [{port: 9090}]
    route: [{destination: {host: pricing, subset: v2}}]
  - route: [{destination: {host: pricing, subset: v1}}]
"""))

    def clusters(target: str) -> list[str]:
        out = translate(view, ProxyInfo(node_id="g"), listener_names=frozenset({target}))
        (host,) = out[ROUTE][target].virtual_hosts
        assert not any(r.match.headers for r in host.routes)
        return [r.route.cluster for r in host.routes]

    assert clusters("pricing:9090") == ["outbound|9090|v2|pricing", "outbound|9090|v1|pricing"]
    assert clusters("pricing") == ["outbound|8080|v1|pricing"]


def test_source_labels_see_the_app_and_source_namespace_the_callers_namespace():
    view = pricing_mesh(SUBSETS + virtual_service("""
  - name: from-web
    match: [{sourceLabels: {app: web}}]
    route: [{destination: {host: pricing, subset: v2}}]
  - name: from-shop
    match: [{sourceNamespace: shop}]
    route: [{destination: {host: pricing, subset: v2}}]
  - name: rest
    route: [{destination: {host: pricing, subset: v1}}]
"""))
    assert [r.name for r in pricing_routes(sidecar(view))] == ["from-web", "rest"]
    assert [r.name for r in pricing_routes(sidecar(view, app="admin", namespace="shop"))] == \
        ["from-shop", "rest"]


def test_gateway_only_rules_do_not_reach_sidecars():
    view = pricing_mesh(SUBSETS + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: [pricing]
  gateways: [ingress]
  http: [{route: [{destination: {host: pricing, subset: v2}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pricing}
spec:
  hosts: [pricing]
  gateways: [ingress, mesh]
  http:
  - name: edge-only
    match: [{gateways: [ingress], uri: {prefix: /admin}}]
    directResponse: {status: 403}
  - name: both
    route: [{destination: {host: pricing, subset: v1}}]
""")
    assert [r.name for r in pricing_routes(sidecar(view))] == ["both"]


def test_mirror_with_a_percentage_reaches_a_served_shadow_cluster():
    view = pricing_mesh(SUBSETS + virtual_service("""
  - route: [{destination: {host: pricing, subset: v1}}]
    mirror: {host: pricing, subset: v2}
    mirrorPercentage: {value: 12.5}
"""))
    out = sidecar(view)
    (route,) = pricing_routes(out)
    (mirror,) = route.route.request_mirror_policies
    assert mirror.cluster == "outbound|8080|v2|pricing"
    assert mirror.runtime_fraction.default_value.numerator == 125_000  # per million
    (sidecar_route,) = compiled_snapshot(out).listeners[0].route_table.exact["pricing"].routes
    assert sidecar_route.mirrors[0].fraction == 0.125


def hashing(key: str) -> str:
    return SUBSETS.replace("spec:\n  host: pricing\n", f"""spec:
  host: pricing
  trafficPolicy:
    loadBalancer:
      consistentHash: {key}
""")


def test_consistent_hash_keys_reach_every_route_to_the_host():
    for key, field, want in (
        ("{httpCookie: {name: user}}", "cookie", {"name": "user"}),
        ("{httpHeaderName: x-user}", "header", {"header_name": "x-user"}),
        ("{useSourceIp: true}", "connection_properties", {"source_ip": True}),
    ):
        view = pricing_mesh(hashing(key) + virtual_service("""
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: pricing, subset: v1}}]
  - route: [{destination: {host: pricing}}]
"""))
        out = sidecar(view)
        for route in pricing_routes(out):
            (policy,) = route.route.hash_policy
            assert policy.WhichOneof("policy_specifier") == field
            assert {f.name: v for f, v in getattr(policy, field).ListFields()} == want
        assert out[CLUSTER]["outbound|8080|v1|pricing"].lb_policy == Cluster.RING_HASH


def test_a_query_parameter_key_reaches_sidecars_and_proxyless_clients():
    view = pricing_mesh(hashing("{httpQueryParameterName: user}"))
    out = sidecar(view)
    (route,) = pricing_routes(out)
    (policy,) = route.route.hash_policy
    assert policy.query_parameter.name == "user"
    (compiled,) = compiled_snapshot(out).listeners[0].route_table.exact["pricing"].routes
    assert compiled.hash_policies == (HashPolicy("query_parameter", b"user"),)
    out = translate(view, ProxyInfo(node_id="g"), listener_names=frozenset({"pricing"}))
    (policy,) = out[ROUTE]["pricing"].virtual_hosts[0].routes[0].route.hash_policy
    assert policy.query_parameter.name == "user"


def test_outlier_detection_and_pool_settings_with_subset_overrides():
    view = pricing_mesh("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pricing}
spec:
  host: pricing
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 20, connectTimeout: 300ms}
      http: {http1MaxPendingRequests: 5, maxRequestsPerConnection: 100, idleTimeout: 30s,
             http2MaxRequests: 40, maxRetries: 4}
    outlierDetection:
      consecutive5xxErrors: 3
      consecutiveGatewayErrors: 2
      interval: 2s
      baseEjectionTime: 10s
      maxEjectionPercent: 50
      minHealthPercent: 30
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 1, minHealthPercent: 0}
  - {name: v2, labels: {version: v2}}
""")
    out = sidecar(view)
    snapshot = compiled_snapshot(out)
    whole = snapshot.clusters["outbound|8080||pricing"]
    assert (whole.outlier.consecutive_5xx, whole.outlier.consecutive_gateway_failure,
            whole.outlier.interval, whole.outlier.base_ejection_time,
            whole.outlier.max_ejection_percent) == (3, 2, 2.0, 10.0, 50)
    assert whole.healthy_panic_threshold == 30
    assert (whole.limits.max_connections, whole.limits.max_pending_requests,
            whole.limits.max_requests, whole.limits.max_retries) == (20, 5, 40, 4)
    assert (whole.connect_timeout, whole.idle_timeout, whole.max_requests_per_connection) == \
        (0.3, 30.0, 100)
    message = out[CLUSTER]["outbound|8080||pricing"].outlier_detection
    assert message.enforcing_consecutive_gateway_failure.value == 100
    # the subset's section replaces the rule's whole outlier section; others are inherited
    v1 = snapshot.clusters["outbound|8080|v1|pricing"]
    assert (v1.outlier.consecutive_5xx, v1.outlier.consecutive_gateway_failure) == (1, 0)
    assert v1.healthy_panic_threshold == 1  # 0 ("never panic") is sent as 1, see clusters
    assert v1.limits.max_connections == 20
    assert snapshot.clusters["outbound|8080|v2|pricing"].outlier.consecutive_5xx == 3


def test_without_min_health_percent_the_panic_threshold_is_left_to_the_sidecar():
    view = pricing_mesh("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pricing}
spec:
  host: pricing
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}
""")
    cluster = sidecar(view)[CLUSTER]["outbound|8080||pricing"]
    assert not cluster.common_lb_config.HasField("healthy_panic_threshold")
