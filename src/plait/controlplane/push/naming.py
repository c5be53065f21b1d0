"""Resource names the push side serves, in one place.

Cluster names follow Istio, `outbound|<port>|<subset>|<host>`, so an operator who knows
Istio's `proxy-config` output reads Plait's at a glance and the name alone says which
service, port and subset a cluster stands for. A cluster's EDS name is the cluster name.
"""

from __future__ import annotations

OUTBOUND = "outbound"
INBOUND = "inbound"
ROUTER_FILTER = "envoy.filters.http.router"
HCM_FILTER = "envoy.filters.network.http_connection_manager"


def outbound_cluster(host: str, port: int, subset: str = "") -> str:
    return f"{OUTBOUND}|{port}|{subset}|{host}"


def inbound_cluster(app: str, port: int) -> str:
    return f"{INBOUND}|{port}||{app}"


def parse_cluster(name: str) -> tuple[str, int, str, str] | None:
    """(direction, port, subset, host) of a Plait cluster name, or None for other names."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in (OUTBOUND, INBOUND) or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2], parts[3]


def split_target(name: str) -> tuple[str, int | None]:
    """A proxyless client's listener name ("greeter" or "greeter:50051") → (host, port)."""
    host, sep, port = name.rpartition(":")
    if sep and port.isdigit() and host:
        return host, int(port)
    return name, None
