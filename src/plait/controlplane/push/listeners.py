"""Listeners: the sidecar's outbound and inbound sockets, and gRPC's API listeners.

All three carry an HttpConnectionManager whose filter chain is the fault filter (idle
until a route asks, see `faults`) then the router, each with its typed_config set (gRPC
NACKs a listener whose router has none). The sidecar's outbound side takes
its routes by RDS so a routing change does not touch the listener; the inbound side has
one fixed route to the local app, so it is inline. An API listener (a proxyless gRPC
client's view of one target) also uses RDS, under the listener's own name.

Plait's governance filters (`governance`) come before the fault filter, and only on
sidecars that need them: the rate limit on the inbound side of a limited service, with
its rules as the listener's config; the circuit breaker on the outbound side of a caller
of a guarded service, with no config of its own (each guarded route carries its
breakers), so turning a breaker on or off for one more service is a route change only.
On the outbound side the breaker comes before the fault filter, so a fault drill's
aborts and delays count as the failures and slowness a breaker watches for.
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

from plait.controlplane.push import faults, governance
from plait.controlplane.push.clusters import ads_source
from plait.controlplane.push.faults import FAULT_FILTER
from plait.controlplane.push.naming import HCM_FILTER, INBOUND, OUTBOUND, ROUTER_FILTER

HCM = hcm_pb2.HttpConnectionManager
LOOPBACK = "127.0.0.1"


def connection_manager(*, stat_prefix: str, rds_name: str = "",
                       route_config: route_pb2.RouteConfiguration | None = None,
                       governance_filters: tuple[hcm_pb2.HttpFilter, ...] = ()) -> HCM:
    hcm = HCM(stat_prefix=stat_prefix, codec_type=HCM.AUTO)
    if route_config is not None:
        hcm.route_config.CopyFrom(route_config)
    else:
        hcm.rds.route_config_name = rds_name
        hcm.rds.config_source.CopyFrom(ads_source())
    hcm.http_filters.extend(governance_filters)
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


def outbound_listener(port: int, *, breakers: bool = False) -> listener_pb2.Listener:
    """`breakers`: some route of this sidecar carries circuit breakers."""
    extra = (hcm_pb2.HttpFilter(name=governance.BREAKER_FILTER),) if breakers else ()
    hcm = connection_manager(stat_prefix=OUTBOUND, rds_name=OUTBOUND,
                             governance_filters=extra)
    return socket_listener(name=OUTBOUND, host=LOOPBACK, port=port, hcm=hcm)


def inbound_listener(port: int, *, cluster: str, rate_limit=None) -> listener_pb2.Listener:
    """`rate_limit`: the app's rate-limit filter config (a TypedStruct), if it has one."""
    routes = route_pb2.RouteConfiguration(name=INBOUND)
    vhost = routes.virtual_hosts.add(name=INBOUND, domains=["*"])
    route = vhost.routes.add(name="local-app")
    route.match.prefix = "/"
    route.route.cluster = cluster
    extra = ()
    if rate_limit is not None:
        limiter = hcm_pb2.HttpFilter(name=governance.RATE_LIMIT_FILTER)
        limiter.typed_config.Pack(rate_limit)
        extra = (limiter,)
    hcm = connection_manager(stat_prefix=INBOUND, route_config=routes,
                             governance_filters=extra)
    return socket_listener(name=INBOUND, host=LOOPBACK, port=port, hcm=hcm)


def api_listener(name: str) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(name=name)
    hcm = connection_manager(stat_prefix=name, rds_name=name)
    packed = any_pb2.Any()
    packed.Pack(hcm)
    listener.api_listener.api_listener.CopyFrom(packed)
    return listener
