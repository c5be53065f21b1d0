"""Plait's sidecar as a benchmark subject: a bootstrap written for the chosen ports, and start-up.

The bootstrap is the same Envoy v3 Bootstrap YAML a user writes: one outbound listener
routing every path to one STATIC cluster. Benchmarks that need more (route tables, filters,
mTLS) pass their own `route_config` or `http_filters`, or write a whole bootstrap and call
`start_sidecar` with it. The sidecar is ready when it prints `plait sidecar ready`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from _harness import Procs, free_port
from _peers import Server

READY_PREFIX = "plait sidecar ready"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def _address(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def bootstrap(*, listen_port: int, admin_port: int, upstream_port: int,
              route_config: dict | None = None, http_filters: list | None = None) -> dict:
    """An outbound listener on listen_port → cluster `app` → 127.0.0.1:upstream_port."""
    route_config = route_config or {
        "name": "local",
        "virtual_hosts": [{"name": "all", "domains": ["*"],
                           "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}],
    }
    return {
        "node": {"id": "bench", "cluster": "bench"},
        "admin": {"address": _address(admin_port)},
        "static_resources": {
            "listeners": [{
                "name": "outbound",
                "address": _address(listen_port),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {"@type": HCM, "stat_prefix": "outbound",
                                     "route_config": route_config,
                                     "http_filters": (http_filters or []) + [ROUTER]},
                }]}],
            }],
            "clusters": [{
                "name": "app", "connect_timeout": "1s", "type": "STATIC",
                "load_assignment": {"cluster_name": "app", "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": _address(upstream_port)}}]}]},
            }],
        },
    }


def start_sidecar(procs: Procs, workdir: Path, upstream: Server, *, cpus: set[int] | None,
                  concurrency: int = 1, config: dict | None = None,
                  ready_timeout: float = 20.0) -> Server:
    """Starts `plait sidecar --concurrency N --access-log off` and waits for its ready line."""
    port, admin = free_port(), free_port()
    config = config or bootstrap(listen_port=port, admin_port=admin, upstream_port=upstream.port)
    path = workdir / "plait-bootstrap.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [sys.executable, "-m", "plait", "sidecar", "--bootstrap", str(path),
            "--concurrency", str(concurrency), "--access-log", "off"]
    proc = procs.start("plait", argv, cpus=cpus, ready_prefix=READY_PREFIX)
    procs.wait_line(proc, timeout=ready_timeout)
    listen = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    return Server(proc, listen["address"], listen["port_value"])
