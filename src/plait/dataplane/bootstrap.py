"""Load a sidecar bootstrap: an Envoy v3 `Bootstrap` document in YAML or JSON.

Static resources are compiled here through the same path a control plane's push takes
(`compile_snapshot`). A bootstrap with `dynamic_resources.ads_config` names the control
plane; `node.metadata` says who the sidecar is (app, labels, dependencies, ports) and,
with `registry`, where to register its app. Any problem is a ConfigError naming the field.
`dynamic_bootstrap` writes such a document from command-line flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format

from plait.core.errors import ConfigError
from plait.dataplane.compile import compile_snapshot
from plait.dataplane.config import Snapshot
from plait.dataplane.registration import InstanceSpec
from plait.xds.resources import parse

XDS_CLUSTER = "xds_cluster"


@dataclass(frozen=True, slots=True)
class Bootstrap:
    snapshot: Snapshot
    message: bootstrap_pb2.Bootstrap
    ads_target: str = ""  # host:port of the control plane's ADS server, "" for static
    registration: InstanceSpec | None = None
    app: str = ""  # node.metadata.app: who this sidecar speaks for
    telemetry_interval: float = 5.0  # node.metadata.telemetry_interval, seconds


def load_bootstrap(path: str) -> Bootstrap:
    """Read and compile the bootstrap file. Raises ConfigError (also for I/O and YAML)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError("", f"cannot read bootstrap {path}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {exc}") from None
    return parse_bootstrap(document)


def parse_bootstrap(document) -> Bootstrap:
    if isinstance(document, str):
        try:
            document = yaml.safe_load(document)
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
    ads_target = _ads_target(message)
    snapshot = compile_snapshot(
        version="static", listeners=sr.listeners,
        clusters=[c for c in sr.clusters if not (ads_target and c.name == XDS_CLUSTER)],
        node_id=message.node.id, admin=admin, root="static_resources", raw=document)
    meta = json_format.MessageToDict(message.node.metadata)
    app = meta.get("app", "")
    if not isinstance(app, str):
        raise ConfigError("node.metadata.app", "must be a string")
    interval = meta.get("telemetry_interval", 5.0)
    if not isinstance(interval, (int, float)) or not 0.1 <= interval <= 3600:
        raise ConfigError("node.metadata.telemetry_interval", "must be 0.1..3600 seconds")
    return Bootstrap(snapshot=snapshot, message=message, ads_target=ads_target,
                     registration=_registration(message), app=app,
                     telemetry_interval=float(interval))


def _ads_target(message: bootstrap_pb2.Bootstrap) -> str:
    if not message.dynamic_resources.HasField("ads_config"):
        return ""
    path = "dynamic_resources.ads_config.grpc_services"
    services = message.dynamic_resources.ads_config.grpc_services
    if not services:
        raise ConfigError(path, "one gRPC service is required")
    svc = services[0]
    if svc.HasField("google_grpc"):
        return svc.google_grpc.target_uri
    name = svc.envoy_grpc.cluster_name
    for cluster in message.static_resources.clusters:
        if cluster.name == name:
            for locality in cluster.load_assignment.endpoints:
                for lb in locality.lb_endpoints:
                    sa = lb.endpoint.address.socket_address
                    return f"{sa.address}:{sa.port_value}"
    raise ConfigError(f"{path}[0].envoy_grpc.cluster_name",
                      f"no static cluster {name!r} with an endpoint")


def _registration(message: bootstrap_pb2.Bootstrap) -> InstanceSpec | None:
    meta = json_format.MessageToDict(message.node.metadata)
    registry = meta.get("registry")
    if not registry:
        return None
    app = meta.get("app")
    if not isinstance(app, str) or not app:
        raise ConfigError("node.metadata.app", "required when node.metadata.registry is set")
    port = meta.get("instance_port", meta.get("inbound_port", 15006))
    labels = meta.get("labels", {})
    if not isinstance(labels, dict):
        raise ConfigError("node.metadata.labels", "must be a map of strings")
    try:
        return InstanceSpec(
            registry=str(registry).rstrip("/"), service=app,
            address=str(meta.get("instance_address", "127.0.0.1")), port=int(port),
            protocol=str(meta.get("protocol", "http")),
            labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            instance_id=message.node.id, ttl=float(meta.get("lease_ttl", 10.0)))
    except (TypeError, ValueError) as exc:
        raise ConfigError("node.metadata", f"bad registration field: {exc}") from None


def dynamic_bootstrap(*, node_id: str, app: str, xds: str, registry: str = "",
                      app_port: int = 0, labels: dict[str, str] | None = None,
                      dependencies: list[str] | None = None, outbound_port: int = 15001,
                      inbound_port: int = 15006, admin_port: int = 15000,
                      instance_address: str = "127.0.0.1", protocol: str = "http",
                      lease_ttl: float | None = None) -> dict:
    """A bootstrap document for a sidecar steered by `plait control`. `lease_ttl`
    (seconds) is how long the registry keeps the app once heartbeats stop (default 10)."""
    host, _, port = xds.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("--xds", f"expected HOST:PORT, got {xds!r}")
    metadata: dict = {"app": app, "labels": labels or {}, "outbound_port": outbound_port,
                      "inbound_port": inbound_port, "instance_address": instance_address,
                      "protocol": protocol}
    if dependencies:
        metadata["dependencies"] = dependencies
    if app_port:
        metadata["app_port"] = app_port
    if registry:
        metadata["registry"] = registry
    if lease_ttl is not None:
        if not lease_ttl > 0:
            raise ConfigError("--lease-ttl", f"must be above 0 seconds, got {lease_ttl:g}")
        metadata["lease_ttl"] = lease_ttl
    return {
        "node": {"id": node_id, "cluster": app, "metadata": metadata},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]},
            "lds_config": {"ads": {}}, "cds_config": {"ads": {}},
        },
        "static_resources": {"clusters": [{
            "name": XDS_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": host, "port_value": int(port)}}}}]}]}}]},
    }
