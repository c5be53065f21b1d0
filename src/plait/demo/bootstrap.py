"""Sidecar bootstrap files for a demo: Envoy v3 Bootstrap YAML for the ports the demo chose.

The shape is the one users write by hand (see examples/): an outbound listener whose
HTTP connection manager routes every path to one STATIC cluster. Callers that need more
routes or filters pass their own `route_config` or `http_filters`.
"""

from __future__ import annotations

import socket
from pathlib import Path

import yaml

HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def socket_address(port: int, host: str = "127.0.0.1") -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def single_cluster(*, node: str, listen_port: int, admin_port: int, upstream_port: int,
                   cluster: str = "app", route_config: dict | None = None,
                   http_filters: list | None = None) -> dict:
    """A Bootstrap: listener `outbound` on listen_port → cluster → 127.0.0.1:upstream_port."""
    route_config = route_config or {
        "name": "local",
        "virtual_hosts": [{"name": "all", "domains": ["*"],
                           "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}],
    }
    return {
        "node": {"id": node, "cluster": node},
        "admin": {"address": socket_address(admin_port)},
        "static_resources": {
            "listeners": [{
                "name": "outbound",
                "address": socket_address(listen_port),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {"@type": HCM_TYPE, "stat_prefix": "outbound",
                                     "route_config": route_config,
                                     "http_filters": (http_filters or []) + [ROUTER]},
                }]}],
            }],
            "clusters": [{
                "name": cluster, "connect_timeout": "1s", "type": "STATIC",
                "load_assignment": {"cluster_name": cluster, "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": socket_address(upstream_port)}}]}]},
            }],
        },
    }


def write(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
