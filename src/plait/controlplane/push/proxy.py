"""Who is asking: a proxy's identity, read once from the xDS `node` of its first request.

Every proxy (a Plait sidecar or a proxyless gRPC client) describes itself in
`node.metadata`, a protobuf Struct, so the same bootstrap works for Envoy-shaped and
gRPC-shaped clients. The keys (all optional):

    app           service name of the proxy's own app            ""
    dependencies  services it calls; ["*"] or absent means all    ["*"]
    outbound_port sidecar outbound listener port                  15001
    inbound_port  sidecar inbound listener port                   15006
    app_port      port of the local app behind the inbound side   none (no inbound listener)
    labels        its app's labels, e.g. {"version": "v1"}        {}
    mtls          it holds a workload certificate (mTLS-capable)  false
    namespace     its workload identity's namespace               "default"

Bad metadata is the proxy operator's mistake, so it is rejected with `ConfigError` naming
the key rather than defaulted silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import json_format

from plait.core.errors import ConfigError

DEFAULT_OUTBOUND_PORT = 15001
DEFAULT_INBOUND_PORT = 15006
ALL = "*"


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    node_id: str
    app: str = ""
    dependencies: tuple[str, ...] = (ALL,)
    outbound_port: int = DEFAULT_OUTBOUND_PORT
    inbound_port: int = DEFAULT_INBOUND_PORT
    app_port: int | None = None
    labels: tuple[tuple[str, str], ...] = field(default=())
    mtls: bool = False
    namespace: str = "default"

    @property
    def calls_everything(self) -> bool:
        return ALL in self.dependencies

    def depends_on(self, service: str) -> bool:
        return self.calls_everything or service in self.dependencies

    @property
    def shape(self) -> tuple:
        """What the sidecar translation depends on; proxies of one shape share resources."""
        return (self.app, self.dependencies, self.outbound_port, self.inbound_port,
                self.app_port, self.labels, self.mtls, self.namespace)

    @classmethod
    def from_node(cls, node) -> ProxyInfo:
        """Parse an `envoy.config.core.v3.Node`. Raises ConfigError on bad metadata."""
        meta = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        return cls.from_metadata(node.id, meta)

    @classmethod
    def from_metadata(cls, node_id: str, meta: dict) -> ProxyInfo:
        deps = meta.get("dependencies")
        if deps is None:
            deps_t: tuple[str, ...] = (ALL,)
        elif isinstance(deps, list) and all(isinstance(d, str) and d for d in deps):
            deps_t = tuple(sorted(set(deps))) or (ALL,)
        else:
            raise ConfigError("node.metadata.dependencies", "must be a list of service names")
        labels = meta.get("labels", {})
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise ConfigError("node.metadata.labels", "must be a map of strings")
        app = meta.get("app", "")
        if not isinstance(app, str):
            raise ConfigError("node.metadata.app", "must be a string")
        app_port = meta.get("app_port")
        mtls = meta.get("mtls", False)
        namespace = meta.get("namespace", "default")
        if not isinstance(mtls, bool):
            raise ConfigError("node.metadata.mtls", "must be true or false")
        if not isinstance(namespace, str) or not namespace:
            raise ConfigError("node.metadata.namespace", "must be a namespace name")
        return cls(
            node_id=node_id,
            app=app,
            dependencies=deps_t,
            outbound_port=_port(meta.get("outbound_port", DEFAULT_OUTBOUND_PORT), "outbound_port"),
            inbound_port=_port(meta.get("inbound_port", DEFAULT_INBOUND_PORT), "inbound_port"),
            app_port=None if app_port is None else _port(app_port, "app_port"),
            labels=tuple(sorted(labels.items())),
            mtls=mtls,
            namespace=namespace,
        )


def _port(value, key: str) -> int:
    # Struct numbers arrive as floats; a string "8080" is a common hand-written slip.
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"node.metadata.{key}", f"must be a port number, got {value!r}") from None
    if not number.is_integer() or not 1 <= number <= 65535:
        raise ConfigError(f"node.metadata.{key}", f"must be a port in 1..65535, got {value!r}")
    return int(number)
