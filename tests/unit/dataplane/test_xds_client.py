"""The ADS client applies only complete snapshots: every cluster a snapshot holds has its
endpoints, even when the control plane renames a cluster and an endpoint response for the
old names is still on its way (responses are fed by hand, in the order the control
plane's stream sends them: clusters, endpoints, listeners, routes, then the answer to a
changed subscription)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from plait.dataplane.config import Snapshot
from plait.dataplane.xds_client import AdsClient, _StreamState
from plait.xds.resources import CLUSTER, ENDPOINT, HCM, LISTENER, ROUTE

ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


class Feed:
    """An AdsClient's response handling, without a stream: `send` hands it a response
    and returns the requests it would write; applied snapshots are kept in order."""

    def __init__(self) -> None:
        self.applied: list[Snapshot] = []
        self.client = AdsClient(target="127.0.0.1:1", node=base_pb2.Node(id="web"),
                                admin=("127.0.0.1", 0),
                                on_snapshot=lambda snap, _: self.applied.append(snap))
        self.state = _StreamState()
        self.version = 0

    def send(self, type_url: str, messages) -> list[discovery_pb2.DiscoveryRequest]:
        self.version += 1
        response = discovery_pb2.DiscoveryResponse(
            type_url=type_url, version_info=str(self.version), nonce=str(self.version))
        for message in messages:
            response.resources.add().Pack(message)
        return self.client._on_response(response, self.state)

    def subscribed(self, type_url: str) -> set[str]:
        return set(self.state.names.get(type_url, ()))


def pricing_mesh(*ports: int) -> dict:
    """What a control plane sends a caller of `pricing` whose instances listen on `ports`:
    the service's port, so its cluster's name, is the lowest of them (as Plait names a
    registry service whose instances all listen on different ports)."""
    cluster = f"outbound|{min(ports)}||pricing"
    hcm = {"@type": HCM, "stat_prefix": "outbound",
           "rds": {"route_config_name": "outbound", "config_source": {"ads": {}}},
           "http_filters": [{"name": "envoy.filters.http.router",
                             "typed_config": {"@type": ROUTER}}]}
    listener = {"name": "outbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15001}},
                "filter_chains": [{"filters": [
                    {"name": "envoy.filters.network.http_connection_manager",
                     "typed_config": hcm}]}]}
    routes = {"name": "outbound", "virtual_hosts": [
        {"name": "pricing", "domains": ["pricing"],
         "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]}
    eds = {"name": cluster, "type": "EDS", "connect_timeout": "5s",
           "eds_cluster_config": {"eds_config": {"ads": {}}}}
    assignment = {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": port}}}}
        for port in ports]}]}
    return {
        LISTENER: {"outbound": json_format.ParseDict(listener, listener_pb2.Listener())},
        ROUTE: {"outbound": json_format.ParseDict(routes, route_pb2.RouteConfiguration())},
        CLUSTER: {cluster: json_format.ParseDict(eds, cluster_pb2.Cluster())},
        ENDPOINT: {cluster: json_format.ParseDict(
            assignment, endpoint_pb2.ClusterLoadAssignment())},
    }


def served(snapshot: Snapshot) -> dict[str, set[int]]:
    """Cluster the outbound route to pricing names → its endpoint ports (a cluster the
    snapshot does not hold maps to None)."""
    [outbound] = [lis for lis in snapshot.listeners if lis.name == "outbound"]
    out = {}
    for vhost in outbound.route_table.virtual_hosts:
        if "pricing" in vhost.domains:
            for route in vhost.routes:
                cluster = snapshot.clusters.get(route.cluster)
                out[route.cluster] = (None if cluster is None
                                      else {e.port for e in cluster.endpoints})
    return out


def test_a_renamed_cluster_is_applied_only_with_its_endpoints():
    feed = Feed()
    before = pricing_mesh(9002, 9003)
    feed.send(LISTENER, before[LISTENER].values())
    feed.send(CLUSTER, before[CLUSTER].values())
    feed.send(ROUTE, [before[ROUTE][n] for n in sorted(feed.subscribed(ROUTE))])
    feed.send(ENDPOINT, [before[ENDPOINT][n] for n in sorted(feed.subscribed(ENDPOINT))])
    assert [served(s) for s in feed.applied] == [{"outbound|9002||pricing": {9002, 9003}}]

    # An instance on a lower port joins: the service's port, so its cluster's name, changes.
    after = pricing_mesh(9001, 9002, 9003)
    old_names = feed.subscribed(ENDPOINT)
    feed.send(CLUSTER, after[CLUSTER].values())
    assert feed.subscribed(ENDPOINT) != old_names  # asked for the new cluster's endpoints
    # The push of this change answers the old subscription: the old cluster is gone.
    feed.send(ENDPOINT, [after[ENDPOINT][n] for n in sorted(old_names) if n in after[ENDPOINT]])
    feed.send(ROUTE, [after[ROUTE][n] for n in sorted(feed.subscribed(ROUTE))])
    # Then the answer to the new subscription.
    feed.send(ENDPOINT, [after[ENDPOINT][n] for n in sorted(feed.subscribed(ENDPOINT))])
    assert [served(s) for s in feed.applied[1:]] == [
        {"outbound|9001||pricing": {9001, 9002, 9003}}]


def test_a_config_waits_for_every_assignment_and_says_which_one():
    feed = Feed()
    mesh = pricing_mesh(9002)
    feed.send(LISTENER, mesh[LISTENER].values())
    feed.send(CLUSTER, mesh[CLUSTER].values())
    feed.send(ROUTE, mesh[ROUTE].values())
    feed.send(ENDPOINT, [])  # the control plane has not sent the assignment (yet)
    assert feed.applied == []
    assert feed.client.status.waiting == "ClusterLoadAssignment outbound|9002||pricing"
    # An empty assignment is an answer: a cluster without endpoints is applied as such.
    empty = endpoint_pb2.ClusterLoadAssignment(cluster_name="outbound|9002||pricing")
    feed.send(ENDPOINT, [empty])
    assert [served(s) for s in feed.applied] == [{"outbound|9002||pricing": set()}]
    assert feed.client.status.waiting == ""


def test_a_route_configuration_is_waited_for_too():
    feed = Feed()
    mesh = pricing_mesh(9002)
    feed.send(LISTENER, mesh[LISTENER].values())
    feed.send(CLUSTER, mesh[CLUSTER].values())
    feed.send(ENDPOINT, mesh[ENDPOINT].values())
    assert feed.applied == [] and feed.client.status.waiting == "RouteConfiguration outbound"
    feed.send(ROUTE, mesh[ROUTE].values())
    assert [served(s) for s in feed.applied] == [{"outbound|9002||pricing": {9002}}]
