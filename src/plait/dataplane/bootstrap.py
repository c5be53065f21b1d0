"""Load a sidecar bootstrap: an Envoy v3 `Bootstrap` document in YAML or JSON.

Static resources are compiled here through the same path a control plane's push takes
(`compile_snapshot`). Any problem is a ConfigError naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2

from plait.core.errors import ConfigError
from plait.dataplane.compile import compile_snapshot
from plait.dataplane.config import Snapshot
from plait.xds.resources import parse


@dataclass(frozen=True, slots=True)
class Bootstrap:
    snapshot: Snapshot
    message: bootstrap_pb2.Bootstrap


def load_bootstrap(path: str) -> Bootstrap:
    """Read and compile the bootstrap file. Raises ConfigError (also for I/O and YAML)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError("", f"cannot read bootstrap {path}: {exc.strerror}") from None
    return parse_bootstrap(text)


def parse_bootstrap(text: str) -> Bootstrap:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError("", "the bootstrap must be a mapping")
    message = parse(document, bootstrap_pb2.Bootstrap())
    admin = ("127.0.0.1", 15000)
    if message.HasField("admin"):
        sa = message.admin.address.socket_address
        admin = (sa.address or "127.0.0.1", sa.port_value)
    sr = message.static_resources
    snapshot = compile_snapshot(
        version="static", listeners=sr.listeners, clusters=sr.clusters,
        node_id=message.node.id, admin=admin, root="static_resources", raw=document)
    return Bootstrap(snapshot=snapshot, message=message)
