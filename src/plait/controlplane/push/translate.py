"""MeshView + a proxy's identity → the Envoy v3 resources for that proxy only.

Two shapes of client are served from the same mesh:

* a **sidecar** (the Plait sidecar, or Envoy) subscribes to Listeners and Clusters by
  wildcard and gets: Listener "outbound" (127.0.0.1:outbound_port, routes by RDS),
  RouteConfiguration "outbound" with one virtual host per dependency, the clusters those
  routes reach, one ClusterLoadAssignment per EDS cluster, and — when the proxy declares
  `app_port` — Listener "inbound" with a static cluster to the local app;
* a **proxyless gRPC client** subscribes to Listeners by name, one per channel target
  (`xds:///greeter` asks for "greeter"), and gets for each an API listener, a
  RouteConfiguration of the same name, and the clusters and endpoints it reaches.
  Dependencies do not limit it: asking by name is the on-demand discovery of a host.

What differs between two sidecars of the same dependencies: their caller conditions
(labels, namespace: `routes`), their locality (a cluster's endpoints may be prioritised
for the caller's zone: `locality`), and, for instances of a service with a global rate
limit, their share of it (`governance`). Everything is memoised on the `MeshIndex`, keyed
by what it depends on, so proxies of the same shape at the same revision share both the
work and the serialised bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from plait.controlplane.mesh import MeshView
from plait.controlplane.push import (
    clusters, failure_rate, governance, health_checks, listeners, locality, routes, security,
)
from plait.controlplane.push.index import MeshIndex, attr, spec
from plait.controlplane.push.naming import (
    INBOUND, OUTBOUND, inbound_cluster, outbound_cluster, split_target,
)
from plait.controlplane.push.proxy import ProxyInfo
from plait.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

# Make-before-break: clusters and their endpoints exist before listeners and routes that
# point at them (Envoy's documented ADS order).
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
WILDCARD_TYPES = frozenset({LISTENER, CLUSTER})
SIDECAR_LISTENERS = frozenset({OUTBOUND, INBOUND})


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource ready to send: packed once, with a digest of its bytes for versioning."""

    name: str
    message: Message
    packed: any_pb2.Any
    digest: bytes

    @classmethod
    def of(cls, name: str, message: Message) -> Resource:
        packed = any_pb2.Any()
        packed.Pack(message, deterministic=True)
        return cls(name, message, packed, hashlib.blake2b(packed.value, digest_size=16).digest())


Resources = dict[str, dict[str, Resource]]  # type URL → name → resource


def empty() -> Resources:
    return {t: {} for t in PUSH_ORDER}


def universe(index: MeshIndex, proxy: ProxyInfo, *, wildcard: bool,
             listener_names: frozenset[str] = frozenset()) -> Resources:
    """Every resource this proxy may see at this revision (named lookups choose from it)."""
    key = ("universe", proxy.shape, governance.share_key(index, proxy), wildcard,
           listener_names)
    return index.memo(key, lambda: _universe(index, proxy, wildcard, listener_names))


def _universe(index, proxy, wildcard, listener_names) -> Resources:
    out = empty()
    if wildcard or listener_names & SIDECAR_LISTENERS:
        _merge(out, sidecar(index, proxy))
    for name in sorted(listener_names - SIDECAR_LISTENERS):
        _merge(out, api_listener(index, name, labels=caller_labels(proxy),
                                 namespace=proxy.namespace))
    return out


def _merge(into: Resources, more: Resources) -> None:
    for type_url, found in more.items():
        into[type_url].update(found)


def caller_labels(proxy: ProxyInfo) -> tuple[tuple[str, str], ...]:
    """The labels a rule sees on the calling workload: its own, plus `app` (as a
    workload's labels carry it in Istio, for `sourceLabels: {app: web}`)."""
    return tuple(sorted(security.workload_labels(proxy.app, proxy.labels).items()))


def sidecar(index: MeshIndex, proxy: ProxyInfo) -> Resources:
    key = ("sidecar", proxy.shape, governance.share_key(index, proxy))
    return index.memo(key, lambda: _sidecar(index, proxy))


def _sidecar(index: MeshIndex, proxy: ProxyInfo) -> Resources:
    out = empty()
    hosts = sorted(index.services) if proxy.calls_everything else [
        d for d in proxy.dependencies if d in index.services
    ]
    labels = caller_labels(proxy)
    route_config, refs = _route_config(index, OUTBOUND, hosts, proxyless=False,
                                       labels=labels, namespace=proxy.namespace)
    for host in hosts:
        refs |= _subset_refs(index, host)
    out[ROUTE][OUTBOUND] = Resource.of(OUTBOUND, route_config)
    guarded = any(governance.breakers(index, host) is not None for host in hosts)
    out[LISTENER][OUTBOUND] = index.memo(
        ("listener", OUTBOUND, proxy.outbound_port, guarded),
        lambda: Resource.of(OUTBOUND, listeners.outbound_listener(
            proxy.outbound_port, breakers=guarded)))
    _add_clusters(out, index, refs, proxyless=False, mtls=proxy.mtls, labels=labels)
    if proxy.app_port:
        name = inbound_cluster(proxy.app or "app", proxy.app_port)
        out[CLUSTER][name] = Resource.of(
            name, clusters.static_cluster(name, listeners.LOOPBACK, proxy.app_port))
        inbound = listeners.inbound_listener(
            proxy.inbound_port, cluster=name,
            rate_limit=governance.inbound_rate_limit(index, proxy))
        security.secure_inbound(index, proxy, inbound)
        out[LISTENER][INBOUND] = Resource.of(INBOUND, inbound)
    return out


def api_listener(index: MeshIndex, name: str, *, labels: tuple = (),
                 namespace: str = "default") -> Resources:
    return index.memo(("api", name, labels, namespace),
                      lambda: _api_listener(index, name, labels, namespace))


def _api_listener(index: MeshIndex, name: str, labels: tuple, namespace: str) -> Resources:
    out = empty()
    host, port = split_target(name)
    if index.service(host) is None:
        return out  # absent from the answer: gRPC reports "does not exist" at once
    route_config, refs = _route_config(index, name, [host], proxyless=True,
                                       extra_domains=(name,), port=port, labels=labels,
                                       namespace=namespace)
    refs |= _subset_refs(index, host)
    out[LISTENER][name] = Resource.of(name, listeners.api_listener(name))
    out[ROUTE][name] = Resource.of(name, route_config)
    _add_clusters(out, index, refs, proxyless=True, labels=labels)
    return out


def _subset_refs(index: MeshIndex, host: str) -> set[routes.ClusterRef]:
    """Every subset of host's DestinationRule, routed to or not, as Istio does.

    A weight shift changes routes and clusters in two responses; if the cluster a route
    still points at vanished first, calls to it would fail in between ("CDS resource ...
    does not exist" in gRPC). Keeping defined subsets served makes the shift seamless.
    """
    service = index.service(host)
    if service is None or not service.port:
        return set()
    rule = index.destination_rules.get(host)
    subsets = [s.name for s in spec(rule).subsets] if rule is not None else []
    return {(host, service.port, subset) for subset in ["", *subsets]}


def _route_config(index: MeshIndex, name: str, hosts: list[str], *, proxyless: bool,
                  labels: tuple, namespace: str, extra_domains: tuple[str, ...] = (),
                  port: int | None = None):
    config = route_pb2.RouteConfiguration(name=name)
    refs: set[routes.ClusterRef] = set()
    taken: set[str] = set()  # a domain in two virtual hosts makes Envoy reject the table
    for host in hosts:
        vhost, used = index.memo(
            ("vhost", host, proxyless, extra_domains, port, labels, namespace),
            lambda: routes.virtual_host(
                index, host, domains=routes.domains_for(index, host, *extra_domains),
                proxyless=proxyless, port=port, labels=dict(labels), namespace=namespace))
        domains = [d for d in vhost.domains if d not in taken]
        if not domains:
            continue
        taken.update(domains)
        added = config.virtual_hosts.add()
        added.CopyFrom(vhost)
        if len(domains) != len(vhost.domains):
            del added.domains[:]
            added.domains.extend(domains)
        refs |= used
    return config, refs


def _add_clusters(out: Resources, index: MeshIndex, refs, *, proxyless: bool,
                  mtls: bool = False, labels: tuple = ()) -> None:
    for host, port, subset in sorted(refs):
        name = outbound_cluster(host, port, subset)
        cluster = index.memo(("cluster", name, proxyless, mtls), lambda: Resource.of(
            name, _cluster(index, name=name, host=host, port=port, subset=subset,
                           proxyless=proxyless, mtls=mtls)))
        out[CLUSTER][name] = cluster
        if cluster.message.HasField("eds_cluster_config"):
            client = _locality_client(index, host, subset, port, labels)
            out[ENDPOINT][name] = index.memo(("cla", name, client), lambda: Resource.of(
                name, _assignment(index, name=name, host=host, port=port, subset=subset,
                                  client=client)))


def _locality_client(index: MeshIndex, host: str, subset: str, port: int, labels: tuple):
    """The caller's part in the cluster's endpoints (push.locality); None for none."""
    if not labels:
        return None
    lb = clusters.traffic_policy(index, host, subset, port, "load_balancer")
    outlier = clusters.traffic_policy(index, host, subset, port, "outlier_detection")
    return locality.client_for(dict(labels), setting=attr(lb, "locality_lb_setting"),
                               outlier_detection=outlier is not None)


def _cluster(index: MeshIndex, *, mtls: bool, **how):
    cluster = clusters.build_cluster(index, **how)
    if not how["proxyless"]:  # active checks and the failure-rate rule are the sidecar's
        health_checks.add_health_check(index, cluster, host=how["host"], subset=how["subset"])
        failure_rate.add_failure_rate(index, cluster, host=how["host"], subset=how["subset"])
    if mtls:  # auto mTLS (push.security): the caller holds a certificate
        security.secure_cluster(cluster, index, clusters.cluster_instances(
            index, how["host"], how["subset"]))
    return cluster


def _assignment(index: MeshIndex, *, host: str, **how):
    assignment = clusters.build_load_assignment(index, host=host, **how)
    security.mark_endpoints(index, assignment, host)
    return assignment


def translate(view: MeshView, proxy: ProxyInfo, *,
              listener_names: frozenset[str] | None = None) -> dict[str, dict[str, Message]]:
    """The resources for one proxy as plain messages: sidecar-shaped when listener_names
    is None (a wildcard client), else the API listeners for those names. For tests and
    `plait` tooling; the ADS server uses `universe` with a shared index."""
    index = MeshIndex(view)
    found = universe(index, proxy, wildcard=listener_names is None,
                     listener_names=frozenset(listener_names or ()))
    return {t: {n: r.message for n, r in by_name.items()} for t, by_name in found.items()}
