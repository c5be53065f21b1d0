"""Clusters and their load assignments, from DestinationRules and registry instances.

A cluster is one (host, port, subset). Its policy comes from the host's DestinationRule,
with the subset's own traffic policy winning section by section where it sets one, as in
Istio. Endpoints are the instances whose labels include the subset's labels, grouped into
localities by their `region`/`zone` labels; every locality carries a
`load_balancing_weight` (gRPC drops a locality without one) equal to its number of
endpoints, so traffic spreads evenly per endpoint across zones. For a caller with a
locality the groups may also carry priorities or shares (`locality`).

grpcio's xDS client (1.85, checked here) accepts only ROUND_ROBIN and RING_HASH in
`lb_policy` and NACKs the whole Cluster response otherwise ("LB policy is not
supported"), so for proxyless clients LEAST_REQUEST and RANDOM are served as
ROUND_ROBIN: a weaker policy beats a NACKed cluster.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import duration_pb2

from plait.controlplane.mesh import Instance
from plait.controlplane.push import locality
from plait.controlplane.push.index import MeshIndex, attr, seconds, spec

Cluster = cluster_pb2.Cluster
HTTP2_PROTOCOLS = frozenset({"grpc", "http2", "grpc-web"})
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
DEFAULT_CONNECT_TIMEOUT = 5.0  # Envoy's default for Cluster.connect_timeout
_LB = {
    "ROUND_ROBIN": Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": Cluster.LEAST_REQUEST,
    "LEAST_CONN": Cluster.LEAST_REQUEST,  # Istio's deprecated spelling of the same policy
    "RANDOM": Cluster.RANDOM,
    "PASSTHROUGH": Cluster.ROUND_ROBIN,  # no original-destination mode here
}
_GRPC_LB = {Cluster.ROUND_ROBIN, Cluster.RING_HASH}


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def duration(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(value * 1e9))
    return d


def subset_labels(index: MeshIndex, host: str, subset: str) -> dict[str, str] | None:
    """The labels of `subset` in host's DestinationRule; None when no such subset exists."""
    if not subset:
        return {}
    rule = index.destination_rules.get(host)
    for s in (spec(rule).subsets or ()) if rule is not None else ():
        if s.name == subset:
            return dict(s.labels or {})
    return None


def traffic_policy(index: MeshIndex, host: str, subset: str, port: int, *path: str):
    """A traffic-policy field for one cluster, with Istio's precedence.

    Istio overrides whole sections (load_balancer, connection_pool, outlier_detection):
    the subset's section replaces the rule's, and a port-level section replaces both for
    its port. The first policy that sets `path[0]` decides; the rest of the path is read
    from that section only.
    """
    rule = index.destination_rules.get(host)
    if rule is None:
        return None
    rule = spec(rule)
    policies = [s.traffic_policy for s in rule.subsets if s.name == subset and s.traffic_policy]
    if rule.traffic_policy is not None:
        policies.append(rule.traffic_policy)
    for policy in policies:
        levels = [lv for lv in policy.port_level_settings if lv.port.number == port]
        for source in (*levels, policy):
            section = getattr(source, path[0], None)
            if section is not None:
                return attr(section, *path[1:]) if len(path) > 1 else section
    return None


def consistent_hash(index: MeshIndex, host: str, subset: str, port: int):
    """The DestinationRule's consistentHash settings for the cluster, or None."""
    return traffic_policy(index, host, subset, port, "load_balancer", "consistent_hash")


def build_cluster(index: MeshIndex, *, name: str, host: str, port: int, subset: str,
                  proxyless: bool) -> Cluster:
    cluster = Cluster(name=name)
    service = index.service(host)
    connect = seconds(traffic_policy(index, host, subset, port, "connection_pool", "tcp",
                                     "connect_timeout"))
    cluster.connect_timeout.CopyFrom(duration(connect or DEFAULT_CONNECT_TIMEOUT))
    if service is not None and service.dns:
        # An external name with no registered endpoints: let the data plane resolve it.
        cluster.type = Cluster.LOGICAL_DNS
        cluster.load_assignment.CopyFrom(_dns_assignment(name, host, port))
    else:
        cluster.type = Cluster.EDS
        cluster.eds_cluster_config.eds_config.CopyFrom(ads_source())
        cluster.eds_cluster_config.service_name = name
    _set_lb(cluster, index, host, subset, port, proxyless=proxyless)
    _set_limits(cluster, index, host, subset, port)
    if service is not None and service.protocol(port) in HTTP2_PROTOCOLS:
        # gRPC and HTTP/2 upstreams must be spoken to in HTTP/2 (proxyless gRPC ignores it).
        options = http_protocol_options_pb2.HttpProtocolOptions()
        options.explicit_http_config.http2_protocol_options.SetInParent()
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(options)
    return cluster


def _set_lb(cluster: Cluster, index: MeshIndex, host: str, subset: str, port: int, *,
            proxyless: bool) -> None:
    lb = traffic_policy(index, host, subset, port, "load_balancer")
    if attr(lb, "consistent_hash") is not None:
        cluster.lb_policy = Cluster.RING_HASH
        ring = lb.consistent_hash.minimum_ring_size
        if ring:
            cluster.ring_hash_lb_config.minimum_ring_size.value = ring
        return
    policy = _LB.get(attr(lb, "simple", default="ROUND_ROBIN"), Cluster.ROUND_ROBIN)
    if proxyless and policy not in _GRPC_LB:
        policy = Cluster.ROUND_ROBIN
    cluster.lb_policy = policy


def _set_limits(cluster: Cluster, index: MeshIndex, host: str, subset: str,
                port: int) -> None:
    def policy(*path):
        return traffic_policy(index, host, subset, port, *path)

    limits = {
        "max_connections": policy("connection_pool", "tcp", "max_connections"),
        "max_pending_requests": policy("connection_pool", "http", "http1_max_pending_requests"),
        "max_requests": policy("connection_pool", "http", "http2_max_requests"),
        "max_retries": policy("connection_pool", "http", "max_retries"),
    }
    if any(v is not None for v in limits.values()):
        thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds()
        for field, value in limits.items():
            if value is not None:
                getattr(thresholds, field).value = int(value)
        cluster.circuit_breakers.thresholds.append(thresholds)
    options = cluster.common_http_protocol_options
    per_connection = policy("connection_pool", "http", "max_requests_per_connection")
    if per_connection:
        options.max_requests_per_connection.value = int(per_connection)
    idle = seconds(policy("connection_pool", "http", "idle_timeout"))
    if idle:
        options.idle_timeout.CopyFrom(duration(idle))
    outlier = policy("outlier_detection")
    if outlier is not None:
        cluster.outlier_detection.CopyFrom(_outlier(outlier))
        if outlier.min_health_percent is not None:
            # Istio's minHealthPercent is Envoy's panic threshold. 0 (never panic) is sent
            # as 1: the sidecar cannot yet balance with every host out and no panic.
            cluster.common_lb_config.healthy_panic_threshold.value = float(
                max(1, outlier.min_health_percent))


def _outlier(o) -> outlier_detection_pb2.OutlierDetection:
    out = outlier_detection_pb2.OutlierDetection()
    for ours, istio in (("consecutive_5xx", "consecutive_5xx_errors"),
                        ("consecutive_gateway_failure", "consecutive_gateway_errors"),
                        ("consecutive_local_origin_failure",
                         "consecutive_local_origin_failures"),
                        ("max_ejection_percent", "max_ejection_percent")):
        value = getattr(o, istio, None)
        if value is not None:
            getattr(out, ours).value = int(value)
    if o.consecutive_gateway_errors:
        # Envoy enforces gateway failures at 0% unless told; Istio sets 100 when asked.
        out.enforcing_consecutive_gateway_failure.value = 100
    if o.split_external_local_origin_errors:
        out.split_external_local_origin_errors = True
    for ours, istio in (("interval", "interval"), ("base_ejection_time", "base_ejection_time")):
        value = seconds(getattr(o, istio, None))
        if value is not None:
            getattr(out, ours).CopyFrom(duration(value))
    return out


def cluster_instances(index: MeshIndex, host: str, subset: str) -> list[Instance]:
    """The registered instances behind the cluster (host, subset): those whose labels
    include the subset's."""
    service = index.service(host)
    wanted = subset_labels(index, host, subset)
    if service is None or wanted is None:
        return []
    return [i for i in service.instances if wanted.items() <= i.labels.items()]


def build_load_assignment(index: MeshIndex, *, name: str, host: str, port: int,
                          subset: str, client: locality.Client | None = None
                          ) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints of the cluster; empty (not absent) when none match, so clients fail fast.
    `client`: the caller's locality settings (push.locality), None for none."""
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    chosen = cluster_instances(index, host, subset)
    if not chosen:
        return assignment
    if client is not None and client.distribute:
        _distribute(assignment, chosen, client)
        return assignment
    ranks = {id(i): locality.priority(client, i.labels) if client else 0 for i in chosen}
    levels = {rank: level for level, rank in enumerate(sorted(set(ranks.values())))}
    groups: dict[tuple[int, str, str], list[Instance]] = {}
    for instance in chosen:
        key = (levels[ranks[id(instance)]], *_locality(instance))
        groups.setdefault(key, []).append(instance)
    for (level, region, zone), members in sorted(groups.items()):
        added = _add_locality(assignment, region, zone, members)
        added.priority = level
        added.load_balancing_weight.value = max(1, sum(i.healthy for i in members))
    return assignment


def _distribute(assignment, chosen: list[Instance], client: locality.Client) -> None:
    by_locality: dict[tuple[str, str], list[Instance]] = {}
    for instance in chosen:
        by_locality.setdefault(_locality(instance), []).append(instance)
    shares = locality.shares(client, sorted(by_locality))
    for (region, zone), members in sorted(by_locality.items()):
        share = shares.get((region, zone))
        if share is None:
            continue  # a locality `distribute` leaves out takes no traffic
        added = _add_locality(assignment, region, zone, members)
        added.load_balancing_weight.value = max(1, round(share))
        weight = max(1, round(share * locality.WEIGHT_SCALE / len(members)))
        for endpoint in added.lb_endpoints:
            endpoint.load_balancing_weight.value = weight


def _locality(instance: Instance) -> tuple[str, str]:
    return instance.labels.get("region", ""), instance.labels.get("zone", "")


def _add_locality(assignment, region: str, zone: str, members: list[Instance]):
    added = assignment.endpoints.add()
    added.locality.region = region
    added.locality.zone = zone
    for instance in sorted(members, key=lambda i: (i.address, i.port)):
        added.lb_endpoints.append(_lb_endpoint(instance))
    return added


def _lb_endpoint(instance: Instance) -> endpoint_components_pb2.LbEndpoint:
    endpoint = endpoint_components_pb2.LbEndpoint(
        health_status=health_check_pb2.HEALTHY if instance.healthy else health_check_pb2.UNHEALTHY
    )
    endpoint.endpoint.address.CopyFrom(_address(instance.address, instance.port))
    return endpoint


def _address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port,
                                                  protocol=address_pb2.SocketAddress.TCP)
    )


def _dns_assignment(name: str, host: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    locality = assignment.endpoints.add()
    locality.load_balancing_weight.value = 1
    locality.lb_endpoints.append(_lb_endpoint(Instance(service=host, address=host, port=port)))
    return assignment


def static_cluster(name: str, address: str, port: int) -> Cluster:
    """A cluster with one fixed endpoint (the local app behind the inbound listener)."""
    cluster = Cluster(name=name, type=Cluster.STATIC, lb_policy=Cluster.ROUND_ROBIN)
    cluster.connect_timeout.CopyFrom(duration(DEFAULT_CONNECT_TIMEOUT))
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    locality = assignment.endpoints.add()
    locality.load_balancing_weight.value = 1
    locality.lb_endpoints.append(_lb_endpoint(Instance(service=name, address=address, port=port)))
    cluster.load_assignment.CopyFrom(assignment)
    return cluster
