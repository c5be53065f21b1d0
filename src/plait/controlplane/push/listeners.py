"""Listeners: the sidecar's outbound and inbound sockets, and gRPC's API listeners.

All three carry an HttpConnectionManager whose filter chain is the fault filter (idle
until a route asks, see `faults`) then the router, each with its typed_config set (gRPC
NACKs a listener whose router has none). The sidecar's outbound side takes
its routes by RDS so a routing change does not touch the listener; the inbound side has
one fixed route to the local app, so it is inline. An API listener (a proxyless gRPC
client's view of one target) also uses RDS, under the listener's own name.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2

from plait.controlplane.push import faults
from plait.controlplane.push.clusters import ads_source
from plait.controlplane.push.faults import FAULT_FILTER
from plait.controlplane.push.naming import HCM_FILTER, INBOUND, OUTBOUND, ROUTER_FILTER

HCM = hcm_pb2.HttpConnectionManager
LOOPBACK = "127.0.0.1"


def connection_manager(*, stat_prefix: str, rds_name: str = "",
                       route_config: route_pb2.RouteConfiguration | None = None) -> HCM:
    hcm = HCM(stat_prefix=stat_prefix, codec_type=HCM.AUTO)
    if route_config is not None:
        hcm.route_config.CopyFrom(route_config)
    else:
        hcm.rds.route_config_name = rds_name
        hcm.rds.config_source.CopyFrom(ads_source())
    fault = hcm.http_filters.add(name=FAULT_FILTER)
    fault.typed_config.Pack(faults.listener_config())
    router = hcm.http_filters.add(name=ROUTER_FILTER)
    router.typed_config.Pack(router_pb2.Router())
    return hcm


def socket_listener(*, name: str, host: str, port: int, hcm: HCM) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(name=name, stat_prefix=name)
    listener.address.socket_address.CopyFrom(
        address_pb2.SocketAddress(address=host, port_value=port,
                                  protocol=address_pb2.SocketAddress.TCP)
    )
    network_filter = listener.filter_chains.add().filters.add(name=HCM_FILTER)
    network_filter.typed_config.Pack(hcm)
    return listener


def outbound_listener(port: int) -> listener_pb2.Listener:
    hcm = connection_manager(stat_prefix=OUTBOUND, rds_name=OUTBOUND)
    return socket_listener(name=OUTBOUND, host=LOOPBACK, port=port, hcm=hcm)


def inbound_listener(port: int, *, cluster: str) -> listener_pb2.Listener:
    routes = route_pb2.RouteConfiguration(name=INBOUND)
    vhost = routes.virtual_hosts.add(name=INBOUND, domains=["*"])
    route = vhost.routes.add(name="local-app")
    route.match.prefix = "/"
    route.route.cluster = cluster
    hcm = connection_manager(stat_prefix=INBOUND, route_config=routes)
    return socket_listener(name=INBOUND, host=LOOPBACK, port=port, hcm=hcm)


def api_listener(name: str) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(name=name)
    hcm = connection_manager(stat_prefix=name, rds_name=name)
    packed = any_pb2.Any()
    packed.Pack(hcm)
    listener.api_listener.api_listener.CopyFrom(packed)
    return listener
