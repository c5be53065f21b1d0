"""HealthCheck resources → Envoy's `Cluster.health_checks` on the callers' clusters.

The caller probes, as in Envoy: every sidecar that calls `spec.host` gets the check on
its clusters for that host, on every port; a check without `subset` goes on all of them
(the host's own cluster and each subset's), one with `subset` only on that subset's. A
cluster takes one check (the sidecar runs at most one), chosen as the most specific: a
subset's own check before the host-wide one, and among equals the first by namespace and
name. Proxyless gRPC clients do no active checking and get none.

The shape is the one the sidecar compiles (`plait.dataplane.compile._health_check`) and
Envoy reads. Two choices differ from leaving Envoy's fields unset, so that the sidecar
and an Envoy given the same cluster behave alike: `expected_statuses` is always sent (Envoy
would otherwise accept 200 only, the sidecar 200-399), and the Host header defaults to
the service's host, what its app sees from every other caller, not to the cluster's name
(`outbound|8080||pricing`).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2

from plait.controlplane.push.clusters import duration
from plait.controlplane.push.index import MeshIndex, spec
from plait.model.duration import parse_duration


def health_check(index: MeshIndex, host: str, subset: str) -> health_check_pb2.HealthCheck | None:
    """The check for the cluster of (host, subset); subset "" is the host's own cluster.
    None when no HealthCheck covers it."""
    chosen = None
    for resource in index.health_checks.get(host, ()):
        wanted = spec(resource).subset
        if subset and wanted == subset:
            return _check(resource)
        if wanted is None and chosen is None:
            chosen = resource
    return _check(chosen) if chosen is not None else None


def add_health_check(index: MeshIndex, cluster: cluster_pb2.Cluster, *, host: str,
                     subset: str) -> None:
    """Put the (host, subset) check on `cluster`, if there is one."""
    check = health_check(index, host, subset)
    if check is not None:
        cluster.health_checks.append(check)


def _check(resource) -> health_check_pb2.HealthCheck:
    s = spec(resource)
    out = health_check_pb2.HealthCheck()
    out.interval.CopyFrom(duration(parse_duration(s.interval)))
    out.timeout.CopyFrom(duration(parse_duration(s.timeout)))
    out.unhealthy_threshold.value = s.unhealthy_threshold
    out.healthy_threshold.value = s.healthy_threshold
    if s.http is not None:
        http = out.http_health_check
        http.path = s.http.path
        http.host = s.http.host or s.host
        for r in s.http.expected_statuses:
            http.expected_statuses.add(start=r.start, end=r.end)
    else:
        out.tcp_health_check.SetInParent()
    return out
