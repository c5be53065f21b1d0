"""One consistent reading of the mesh, taken once per revision and shared by every proxy.

The push side reads `MeshView` only here. An index is immutable after construction, so
every proxy translated at a revision sees the same services, rules and instances, and
resources built for one proxy are reused for the next (`memo`). With a thousand proxies
and fifty services the cost of a change is then ~fifty cluster builds, not fifty
thousand.

Services come from three places: the registry (instances), ServiceEntry hosts, and
VirtualService hosts (a virtual host may exist only as routing rules). A registry
service's port is the port most of its instances listen on (ties: the lowest), because
the registry has no separate "service port"; each endpoint keeps its own port.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from plait.controlplane.mesh import Instance, MeshView
from plait.model.duration import parse_duration

VIRTUAL_SERVICE = "VirtualService"
DESTINATION_RULE = "DestinationRule"
SERVICE_ENTRY = "ServiceEntry"
GOVERNANCE_KINDS = ("RateLimit", "CircuitBreaker", "Degrade")  # push.governance
HEALTH_CHECK = "HealthCheck"  # push.health_checks
FAILURE_RATE_EJECTION = "FailureRateEjection"  # push.failure_rate
MESH_GATEWAY = "mesh"  # Istio's name for "every sidecar" in a `gateways` list


@dataclass(frozen=True, slots=True)
class Service:
    host: str
    ports: tuple[int, ...]  # the first is the one a route without a port goes to
    instances: tuple[Instance, ...]
    dns: bool = False  # a ServiceEntry with DNS resolution and no endpoints
    protocols: tuple[tuple[int, str], ...] = ()  # port → lower-case protocol, where known

    @property
    def port(self) -> int:
        return self.ports[0] if self.ports else 0

    def protocol(self, port: int) -> str:
        return dict(self.protocols).get(port, "http")


class MeshIndex:
    """Services, rules and instances at one revision. Read-only once built."""

    def __init__(self, view: MeshView, *, revision: int = 0) -> None:
        self.revision = revision
        self.virtual_services = _by_host(view.resources(VIRTUAL_SERVICE), many=True)
        self.peer_authentications = view.resources("PeerAuthentication")  # push.security
        self.authorization_policies = view.resources("AuthorizationPolicy")
        self.destination_rules = _by_host(view.resources(DESTINATION_RULE), many=False)
        # kind -> protected service -> resources, by namespace and name
        self.governance = {kind: _by_service(view.resources(kind)) for kind in GOVERNANCE_KINDS}
        self.health_checks = _by_host(view.resources(HEALTH_CHECK), many=True)
        self.failure_rate_ejections = _by_host(view.resources(FAILURE_RATE_EJECTION),
                                               many=True)
        self.services = _services(view.instances(), view.resources(SERVICE_ENTRY),
                                  self.virtual_services)
        self._memo: dict[tuple, Any] = {}

    def memo(self, key: tuple, build: Callable[[], Any]) -> Any:
        """`build()` once per key for the life of this index."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = build()
            return value

    def service(self, host: str) -> Service | None:
        return self.services.get(host)

    def routes_for(self, host: str) -> list:
        """The `http` routes of the VirtualServices for host, in order of resource name.
        A VirtualService bound to gateways only (`gateways` set, without "mesh") is for
        those gateways, not for sidecars, as in Istio, and is left out."""
        return [r for vs in self.virtual_services.get(host, ()) if for_mesh(spec(vs).gateways)
                for r in (spec(vs).http or ())]

    def rules(self, kind: str, service: str) -> list:
        """The governance resources of `kind` protecting `service`, by namespace and name."""
        return self.governance.get(kind, {}).get(service, [])


def for_mesh(gateways) -> bool:
    """Whether a `gateways` list (of a VirtualService or of one match) covers sidecars."""
    return not gateways or MESH_GATEWAY in gateways


def spec(resource):
    """The spec of an Istio-shaped resource (or the object itself when it is a bare spec)."""
    return getattr(resource, "spec", resource)


def order_key(resource) -> tuple[str, str]:
    meta = getattr(resource, "metadata", None)
    return (getattr(meta, "namespace", ""), getattr(meta, "name", ""))


def seconds(text: str | None) -> float | None:
    return None if text is None else parse_duration(text)


def attr(obj, *path: str, default=None):
    """obj.a.b.c, or default when any step is None: most Istio fields are optional."""
    for step in path:
        obj = getattr(obj, step, None)
        if obj is None:
            return default
    return obj


def _by_host(resources: list, *, many: bool) -> dict:
    # Sorted by name so that two rules for one host always merge in the same order, and
    # the version hash does not change when nothing did.
    out: dict = {}
    for resource in sorted(resources, key=order_key):
        s = spec(resource)
        hosts = getattr(s, "hosts", None) or [getattr(s, "host", None)]
        for host in hosts:
            if not host:
                continue
            if many:
                out.setdefault(host, []).append(resource)
            else:
                out.setdefault(host, resource)  # Istio: the oldest rule wins; here the first name
    return out


def _by_service(resources: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for resource in sorted(resources, key=order_key):
        out.setdefault(spec(resource).service, []).append(resource)
    return out


def _services(instances: dict[str, list[Instance]], entries: list,
              virtual_services: dict) -> dict[str, Service]:
    services: dict[str, Service] = {}
    for host, found in instances.items():
        services[host] = Service(host, _ports(found), tuple(found), protocols=_protocols(found))
    for entry in sorted(entries, key=order_key):
        s = spec(entry)
        ports = tuple(p.number for p in s.ports)
        for host in s.hosts:
            endpoints = [_entry_instance(host, e, s.ports) for e in s.endpoints]
            if host in services:
                endpoints.extend(services[host].instances)
            dns = not endpoints and s.resolution in ("DNS", "DNS_ROUND_ROBIN")
            declared = tuple((p.number, p.protocol.lower()) for p in s.ports if p.protocol)
            services[host] = Service(host, ports or _ports(endpoints), tuple(endpoints), dns,
                                     protocols=declared or _protocols(endpoints))
    for host in virtual_services:
        services.setdefault(host, Service(host, (), ()))
    return services


def _entry_instance(host: str, endpoint, ports) -> Instance:
    # A workload entry maps service port names to its own ports; unmapped, it listens on
    # the first port's target port (or the port itself), as in Istio.
    port = 0
    for p in ports:
        if p.name in endpoint.ports:
            port = endpoint.ports[p.name]
            break
    else:
        if ports:
            port = ports[0].target_port or ports[0].number
    labels = dict(endpoint.labels)
    # Istio writes an entry's locality as "region/zone/subzone".
    region, _, rest = (endpoint.locality or "").partition("/")
    zone = rest.partition("/")[0]
    if region:
        labels.setdefault("region", region)
    if zone:
        labels.setdefault("zone", zone)
    return Instance(service=host, address=endpoint.address, port=port, labels=labels)


def _protocols(instances) -> tuple[tuple[int, str], ...]:
    # A port's protocol is what most instances on it say (the registry has it per instance).
    by_port: dict[int, Counter] = {}
    for i in instances:
        by_port.setdefault(i.port, Counter())[i.protocol.lower()] += 1
    return tuple(sorted((port, c.most_common(1)[0][0]) for port, c in by_port.items()))


def _ports(instances: list[Instance]) -> tuple[int, ...]:
    counts = Counter(i.port for i in instances)
    return tuple(sorted(counts, key=lambda p: (-counts[p], p)))
