"""The translator's output for representative meshes, asserted on the Envoy resources."""

from __future__ import annotations

from google.protobuf import json_format

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from plait.controlplane.push.proxy import ProxyInfo
from plait.controlplane.push.translate import translate
from plait.testing.meshview import FakeMeshView
from plait.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

Cluster = cluster_pb2.Cluster

REVIEWS_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def mesh(yaml_text: str = "", **services: list[tuple[str, int, dict]]) -> FakeMeshView:
    view = FakeMeshView()
    for service, instances in services.items():
        for address, port, labels in instances:
            view.register(service, address, port, **labels)
    if yaml_text:
        view.apply_yaml(yaml_text)
    return view


def reviews_mesh(yaml_text: str = "") -> FakeMeshView:
    return mesh(
        yaml_text,
        reviews=[("10.0.0.1", 9080, {"version": "v1", "zone": "a"}),
                 ("10.0.0.2", 9080, {"version": "v2", "zone": "a"}),
                 ("10.0.0.3", 9080, {"version": "v2", "zone": "b"})],
        ratings=[("10.0.1.1", 9080, {"version": "v1"})],
    )


def sidecar(view, **meta) -> dict:
    return translate(view, ProxyInfo.from_metadata("node-1", meta))


def vhost(resources: dict, name: str):
    (found,) = [v for v in resources[ROUTE]["outbound"].virtual_hosts if v.name == name]
    return found


def endpoints(assignment) -> list[tuple[str, int]]:
    return sorted((e.endpoint.address.socket_address.address,
                   e.endpoint.address.socket_address.port_value)
                  for loc in assignment.endpoints for e in loc.lb_endpoints)


def test_without_virtual_service_a_host_routes_to_its_whole_service():
    out = sidecar(reviews_mesh(), dependencies=["reviews"])
    host = vhost(out, "reviews")
    assert list(host.domains) == ["reviews", "reviews:9080"]
    (route,) = host.routes
    assert route.match.prefix == "/"
    assert route.route.cluster == "outbound|9080||reviews"
    cluster = out[CLUSTER]["outbound|9080||reviews"]
    assert cluster.type == Cluster.EDS
    assert cluster.eds_cluster_config.service_name == "outbound|9080||reviews"
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert len(endpoints(out[ENDPOINT]["outbound|9080||reviews"])) == 3


def test_weighted_subsets_become_weighted_clusters_over_subset_clusters():
    view = reviews_mesh(REVIEWS_RULE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 75}
    - {destination: {host: reviews, subset: v2}, weight: 25}
""")
    out = sidecar(view, dependencies=["reviews"])
    (route,) = vhost(out, "reviews").routes
    weighted = [(c.name, c.weight.value) for c in route.route.weighted_clusters.clusters]
    assert weighted == [("outbound|9080|v1|reviews", 75), ("outbound|9080|v2|reviews", 25)]
    assert endpoints(out[ENDPOINT]["outbound|9080|v1|reviews"]) == [("10.0.0.1", 9080)]
    assert endpoints(out[ENDPOINT]["outbound|9080|v2|reviews"]) == [("10.0.0.2", 9080),
                                                                    ("10.0.0.3", 9080)]


def test_a_zero_weight_takes_no_traffic_and_its_subset_cluster_stays_served():
    view = reviews_mesh(REVIEWS_RULE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 0}
    - {destination: {host: reviews, subset: v2}, weight: 100}
""")
    out = sidecar(view, dependencies=["reviews"])
    (route,) = vhost(out, "reviews").routes
    assert route.route.cluster == "outbound|9080|v2|reviews"
    # still served, so a proxy mid-shift never routes to a cluster it no longer has
    assert "outbound|9080|v1|reviews" in out[CLUSTER]


def test_matches_headers_uri_method_and_query_in_istio_order():
    view = reviews_mesh(REVIEWS_RULE + r"""
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}, x-trace: {}}
      uri: {prefix: /api/}
      method: {exact: GET}
      queryParams: {debug: {regex: "1|true"}}
      withoutHeaders: {x-skip: {prefix: "y"}}
    - uri: {regex: "/v[0-9]+/.*"}
      ignoreUriCase: true
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {exact: /health}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
""")
    routes = list(vhost(sidecar(view), "reviews").routes)
    assert [r.name for r in routes] == ["jason", "jason", "reviews-1", "reviews-2"]
    first = routes[0].match
    assert first.prefix == "/api/"
    headers = {h.name: json_format.MessageToDict(h) for h in first.headers}
    assert headers[":method"]["stringMatch"] == {"exact": "GET"}
    assert headers["end-user"]["stringMatch"] == {"exact": "jason"}
    assert headers["x-trace"]["presentMatch"] is True
    assert headers["x-skip"] == {"name": "x-skip", "stringMatch": {"prefix": "y"},
                                 "invertMatch": True}
    assert first.query_parameters[0].string_match.safe_regex.regex == "1|true"
    assert routes[1].match.safe_regex.regex == "/v[0-9]+/.*"
    assert routes[1].match.case_sensitive.value is False
    assert routes[2].match.path == "/health"
    assert routes[3].match.prefix == "/"
    assert routes[0].route.cluster == "outbound|9080|v2|reviews"


def test_destination_rule_load_balancer_and_limits_reach_the_cluster():
    view = reviews_mesh("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {connectTimeout: 250ms, maxConnections: 10}
      http: {http2MaxRequests: 50, maxRetries: 2}
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 30s}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-session}}}
""")
    out = sidecar(view)
    whole = out[CLUSTER]["outbound|9080||reviews"]
    assert whole.lb_policy == Cluster.LEAST_REQUEST
    assert whole.connect_timeout.ToMilliseconds() == 250
    limits = whole.circuit_breakers.thresholds[0]
    assert (limits.max_connections.value, limits.max_requests.value,
            limits.max_retries.value) == (10, 50, 2)
    assert limits.HasField("max_pending_requests") is False
    assert whole.outlier_detection.consecutive_5xx.value == 3
    assert whole.outlier_detection.base_ejection_time.seconds == 30
    assert out[CLUSTER]["outbound|9080|v1|reviews"].lb_policy == Cluster.RANDOM
    assert out[CLUSTER]["outbound|9080|v2|reviews"].lb_policy == Cluster.RING_HASH
    # subsets inherit the sections they do not override
    assert out[CLUSTER]["outbound|9080|v1|reviews"].connect_timeout.ToMilliseconds() == 250
    # consistent hashing needs the key on the route that reaches the cluster
    (route,) = vhost(out, "ratings").routes
    assert out[CLUSTER]["outbound|9080||ratings"].lb_policy == Cluster.RING_HASH
    assert route.route.hash_policy[0].header.header_name == "x-session"
    assert not vhost(out, "reviews").routes[0].route.hash_policy
    # a hashed route retries on its host: no previous_hosts predicate (as in Istio)
    assert route.route.retry_policy.num_retries.value == 2
    assert not route.route.retry_policy.retry_host_predicate


def test_proxyless_clients_get_only_load_balancers_grpc_accepts():
    view = reviews_mesh("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
""")
    proxy = ProxyInfo(node_id="grpc-client")
    out = translate(view, proxy, listener_names=frozenset({"reviews"}))
    assert out[CLUSTER]["outbound|9080||reviews"].lb_policy == Cluster.ROUND_ROBIN
    assert sidecar(view)[CLUSTER]["outbound|9080||reviews"].lb_policy == Cluster.LEAST_REQUEST


def test_subsets_select_instances_whose_labels_include_the_subset_labels():
    view = mesh("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pay}
spec:
  host: pay
  subsets:
  - {name: canary, labels: {version: v2, track: canary}}
  - {name: nobody, labels: {version: v9}}
""", pay=[("10.1.0.1", 80, {"version": "v2", "track": "canary", "zone": "a"}),
          ("10.1.0.2", 80, {"version": "v2"}),
          ("10.1.0.3", 80, {"version": "v1", "track": "canary"})])
    out = sidecar(view)
    assert endpoints(out[ENDPOINT]["outbound|80|canary|pay"]) == [("10.1.0.1", 80)]
    # a subset nobody matches is served empty (calls fail fast), never left out
    assert endpoints(out[ENDPOINT]["outbound|80|nobody|pay"]) == []


def test_every_locality_has_a_weight_and_zones_come_from_labels():
    view = mesh(pay=[("10.1.0.1", 80, {"zone": "a"}), ("10.1.0.2", 80, {"zone": "a"}),
                     ("10.1.0.3", 80, {"zone": "b", "region": "eu"}), ("10.1.0.4", 80, {})])
    view.register("pay", "10.1.0.5", 80, healthy=False, zone="b", region="eu")
    assignment = sidecar(view)[ENDPOINT]["outbound|80||pay"]
    localities = {(loc.locality.region, loc.locality.zone):
                  (loc.load_balancing_weight.value, len(loc.lb_endpoints))
                  for loc in assignment.endpoints}
    assert localities == {("", ""): (1, 1), ("", "a"): (2, 2), ("eu", "b"): (1, 2)}
    statuses = {e.endpoint.address.socket_address.address: e.health_status
                for loc in assignment.endpoints for e in loc.lb_endpoints}
    assert statuses["10.1.0.5"] == health_check_pb2.UNHEALTHY
    assert statuses["10.1.0.3"] == health_check_pb2.HEALTHY


def test_a_proxy_gets_only_the_services_it_depends_on():
    view = reviews_mesh()
    only = sidecar(view, dependencies=["ratings", "not-in-the-mesh"])
    assert [v.name for v in only[ROUTE]["outbound"].virtual_hosts] == ["ratings"]
    assert set(only[CLUSTER]) == {"outbound|9080||ratings"}
    assert set(only[ENDPOINT]) == {"outbound|9080||ratings"}
    everything = sidecar(view, dependencies=["*"])
    assert [v.name for v in everything[ROUTE]["outbound"].virtual_hosts] == ["ratings",
                                                                             "reviews"]
    assert sidecar(view) == everything  # no dependencies declared: all


def test_an_empty_mesh_still_gives_the_sidecar_its_listeners():
    out = sidecar(mesh(), app="web", app_port=8080, outbound_port=16001, inbound_port=16006)
    assert set(out[LISTENER]) == {"outbound", "inbound"}
    assert out[ROUTE]["outbound"].virtual_hosts == []
    assert set(out[CLUSTER]) == {"inbound|8080||web"}
    assert out[ENDPOINT] == {}
    outbound = out[LISTENER]["outbound"]
    assert (outbound.address.socket_address.address,
            outbound.address.socket_address.port_value) == ("127.0.0.1", 16001)
    hcm = hcm_pb2.HttpConnectionManager()
    outbound.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert hcm.rds.route_config_name == "outbound"
    assert hcm.rds.config_source.HasField("ads")
    assert hcm.http_filters[-1].name == "envoy.filters.http.router"
    assert hcm.http_filters[-1].HasField("typed_config")
    inbound_cluster = out[CLUSTER]["inbound|8080||web"]
    assert inbound_cluster.type == Cluster.STATIC
    assert endpoints(inbound_cluster.load_assignment) == [("127.0.0.1", 8080)]
    assert out[LISTENER]["inbound"].address.socket_address.port_value == 16006
    assert set(sidecar(mesh())[LISTENER]) == {"outbound"}  # no app_port: no inbound side


def test_proxyless_target_gets_an_api_listener_and_its_own_route_table():
    view = reviews_mesh()
    proxy = ProxyInfo(node_id="grpc-client")
    out = translate(view, proxy, listener_names=frozenset({"reviews", "reviews:9080", "nope"}))
    assert set(out[LISTENER]) == {"reviews", "reviews:9080"}  # unknown names: absent
    listener = out[LISTENER]["reviews"]
    hcm = hcm_pb2.HttpConnectionManager()
    listener.api_listener.api_listener.Unpack(hcm)
    assert hcm.rds.route_config_name == "reviews"
    assert hcm.http_filters[-1].name == "envoy.filters.http.router"
    assert hcm.http_filters[-1].HasField("typed_config")
    (host,) = out[ROUTE]["reviews"].virtual_hosts
    assert host.domains[0] == "reviews"
    assert host.routes[0].route.cluster == "outbound|9080||reviews"
    assert out[ROUTE]["reviews:9080"].virtual_hosts[0].domains[0] == "reviews:9080"
    assert "outbound" not in out[LISTENER]


def test_timeouts_retries_and_rewrites():
    view = reviews_mesh(REVIEWS_RULE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /old/}}]
    rewrite: {uri: /new/, authority: reviews.internal}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure,503"}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /no-retry/}}]
    retries: {attempts: 0}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /same-host/}}]
    retries: {attempts: 1, retryIgnorePreviousHosts: false}
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v2}}]
""")
    routes = list(vhost(sidecar(view), "reviews").routes)
    action = routes[0].route
    assert action.timeout.ToMilliseconds() == 1500
    assert action.prefix_rewrite == "/new/"
    assert action.host_rewrite_literal == "reviews.internal"
    retry = action.retry_policy
    assert retry.num_retries.value == 3
    assert retry.retry_on == "5xx,connect-failure,retriable-status-codes"
    assert list(retry.retriable_status_codes) == [503]
    assert retry.per_try_timeout.ToMilliseconds() == 500
    assert not routes[1].route.HasField("retry_policy")
    same_host = routes[2].route.retry_policy
    assert same_host.num_retries.value == 1 and not same_host.retry_host_predicate
    default = routes[3].route.retry_policy  # nothing written: Istio's default policy
    assert default.num_retries.value == 2
    assert "connect-failure" in default.retry_on
    for policy in (retry, default):  # a retry goes to another host, as in Istio
        (predicate,) = policy.retry_host_predicate
        assert predicate.name == "envoy.retry_host_predicates.previous_hosts"
        assert predicate.typed_config.type_url.endswith(".previous_hosts.v3.PreviousHostsPredicate")
        assert policy.host_selection_retry_max_attempts == 5
    proxyless = translate(view, ProxyInfo(node_id="g"), listener_names=frozenset({"reviews"}))
    grpc_action = proxyless[ROUTE]["reviews"].virtual_hosts[0].routes[0].route
    assert grpc_action.max_stream_duration.max_stream_duration.ToMilliseconds() == 1500


def test_source_labels_limit_a_route_to_some_callers():
    view = reviews_mesh(REVIEWS_RULE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {version: canary}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
""")
    canary = vhost(sidecar(view, labels={"version": "canary", "app": "web"}), "reviews")
    stable = vhost(sidecar(view, labels={"version": "v1"}), "reviews")
    assert [r.route.cluster for r in canary.routes] == ["outbound|9080|v2|reviews",
                                                        "outbound|9080|v1|reviews"]
    assert [r.route.cluster for r in stable.routes] == ["outbound|9080|v1|reviews"]


def test_service_entries_with_endpoints_and_with_dns():
    view = mesh("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.internal]
  ports: [{number: 5432, name: pg, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - {address: 10.9.0.1, ports: {pg: 6432}, locality: eu-west/eu-west-1a}
  - {address: 10.9.0.2}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: search}
spec:
  hosts: [api.search.example]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
""")
    out = sidecar(view)
    assert list(vhost(out, "db.internal").domains) == ["db.internal", "db.internal:5432"]
    assignment = out[ENDPOINT]["outbound|5432||db.internal"]
    assert endpoints(assignment) == [("10.9.0.1", 6432), ("10.9.0.2", 5432)]
    zones = {loc.locality.zone for loc in assignment.endpoints}
    assert zones == {"eu-west-1a", ""}
    dns = out[CLUSTER]["outbound|443||api.search.example"]
    assert dns.type == Cluster.LOGICAL_DNS
    assert endpoints(dns.load_assignment) == [("api.search.example", 443)]
    assert "outbound|443||api.search.example" not in out[ENDPOINT]


def test_translation_is_deterministic():
    view = reviews_mesh(REVIEWS_RULE)
    proxy = ProxyInfo.from_metadata("n", {})
    first = {t: {n: m.SerializeToString(deterministic=True) for n, m in r.items()}
             for t, r in translate(view, proxy).items()}
    again = {t: {n: m.SerializeToString(deterministic=True) for n, m in r.items()}
             for t, r in translate(view, proxy).items()}
    assert first == again


def test_faults_ride_on_routes_and_every_listener_has_the_idle_fault_filter():
    from envoy.extensions.filters.http.fault.v3 import fault_pb2

    view = reviews_mesh(REVIEWS_RULE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /slow}}]
    fault: {delay: {fixedDelay: 250ms, percentage: {value: 12.5}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - fault: {abort: {httpStatus: 503}}
    route: [{destination: {host: reviews, subset: v2}}]
""")
    out = sidecar(view, app="web", app_port=8080)
    for name in ("outbound", "inbound"):
        hcm = hcm_pb2.HttpConnectionManager()
        out[LISTENER][name].filter_chains[0].filters[0].typed_config.Unpack(hcm)
        assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.fault",
                                                      "envoy.filters.http.router"]
        idle = fault_pb2.HTTPFault()
        hcm.http_filters[0].typed_config.Unpack(idle)
        assert not idle.HasField("delay") and not idle.HasField("abort")

    def fault(route) -> fault_pb2.HTTPFault:
        found = fault_pb2.HTTPFault()
        route.typed_per_filter_config["envoy.filters.http.fault"].Unpack(found)
        return found

    slow, grpc_abort, http_abort = vhost(out, "reviews").routes
    assert fault(slow).delay.fixed_delay.ToMilliseconds() == 250
    assert fault(slow).delay.percentage.numerator == 125_000  # of a million
    assert fault(grpc_abort).abort.grpc_status == 14
    assert fault(grpc_abort).abort.percentage.numerator == 1_000_000
    assert fault(http_abort).abort.http_status == 503
    # Istio: no percentage written means no request is aborted
    assert fault(http_abort).abort.percentage.numerator == 0
    assert not vhost(sidecar(reviews_mesh()), "reviews").routes[0].typed_per_filter_config


def test_grpc_and_http2_upstreams_are_spoken_to_in_http2():
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    view = mesh("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ledger}
spec:
  hosts: [ledger.internal]
  ports: [{number: 9090, name: grpc, protocol: GRPC}]
  resolution: STATIC
  endpoints: [{address: 10.9.0.1}]
""", rest=[("10.0.0.1", 80, {})])
    view.register("greeter", "10.0.0.2", 50051, protocol="grpc")
    out = sidecar(view)
    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    for name in ("outbound|50051||greeter", "outbound|9090||ledger.internal"):
        options = http_protocol_options_pb2.HttpProtocolOptions()
        out[CLUSTER][name].typed_extension_protocol_options[key].Unpack(options)
        assert options.explicit_http_config.HasField("http2_protocol_options")
    assert not out[CLUSTER]["outbound|80||rest"].typed_extension_protocol_options
