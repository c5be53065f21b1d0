"""Plait's sidecar as a benchmark subject: a bootstrap for the chosen ports, and start-up.

The bootstrap is the same Envoy v3 Bootstrap YAML a user writes (built by
`plait.demo.bootstrap`): one outbound listener routing every path to one STATIC cluster.
Benchmarks that need more (route tables, filters, mTLS) pass their own `config`, for
instance `single_cluster(..., route_config=..., http_filters=...)` or a whole bootstrap.
The sidecar is ready when it prints `plait sidecar ready`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from plait.demo.bootstrap import single_cluster, write

from _harness import Procs, free_port
from _peers import Server

READY_PREFIX = "plait sidecar ready"


def start_sidecar(procs: Procs, workdir: Path, upstream: Server, *, cpus: set[int] | None,
                  concurrency: int = 1, config: dict | None = None,
                  ready_timeout: float = 30.0) -> Server:
    """Starts `plait sidecar --concurrency N --access-log off` and waits for its ready line.

    Without `config`, the bootstrap routes a fresh loopback port to `upstream`."""
    if config is None:
        config = single_cluster(node="bench", listen_port=free_port(), admin_port=free_port(),
                                upstream_port=upstream.port)
    path = write(config, workdir / "plait-bootstrap.yaml")
    argv = [sys.executable, "-m", "plait", "sidecar", "--bootstrap", str(path),
            "--concurrency", str(concurrency), "--access-log", "off"]
    proc = procs.start("plait", argv, cpus=cpus, ready_prefix=READY_PREFIX)
    procs.wait_line(proc, timeout=ready_timeout)
    listen = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    return Server(proc, listen["address"], listen["port_value"])
