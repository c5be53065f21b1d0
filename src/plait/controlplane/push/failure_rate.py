"""FailureRateEjection resources → the failure-rate rule of the callers' outlier detection.

The caller judges, as with every outlier rule: each sidecar that calls `spec.host` gets
the rule on its clusters for that host, on every port; one without `subset` goes on all
of them (the host's own cluster and each subset's), one with `subset` only on that
subset's. A cluster takes one rule, the most specific: a subset's own before the
host-wide one, and among equals the first by namespace and name. Proxyless gRPC clients
get none: gRPC's failure_percentage has neither the ratio nor the window.

Envoy's `failure_percentage_*` fields carry what they can (`enforcingPercent` is
`enforcing_failure_percentage`, the chance that an endpoint found is ejected); the
ratio and the window, which Envoy has no field for, go in the cluster's
`metadata.filter_metadata["plait.outlier"]`, where the sidecar's compiler
(`plait.dataplane.upstream.outlier_config`) reads them. The rule joins the cluster's
outlier detection from the DestinationRule, which keeps deciding the ejection time, the
share of endpoints that may be out and the consecutive rules. Without one, the cluster
gets an `outlier_detection` with the consecutive 5xx rule off (`consecutive_5xx` 0,
`enforcing_consecutive_5xx` 0) and Envoy's defaults for the rest: the rule asked for is
the only one in force.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from plait.controlplane.push.clusters import duration
from plait.controlplane.push.index import MeshIndex, spec
from plait.model.duration import parse_duration

METADATA = "plait.outlier"  # the sidecar's key for what Envoy has no field for


def failure_rate_rule(index: MeshIndex, host: str, subset: str):
    """The FailureRateEjection for the cluster of (host, subset); subset "" is the host's
    own cluster. None when none covers it."""
    chosen = None
    for resource in index.failure_rate_ejections.get(host, ()):
        wanted = spec(resource).subset
        if subset and wanted == subset:
            return resource
        if wanted is None and chosen is None:
            chosen = resource
    return chosen


def add_failure_rate(index: MeshIndex, cluster: cluster_pb2.Cluster, *, host: str,
                     subset: str) -> None:
    """Put the (host, subset) rule on `cluster`, if there is one."""
    resource = failure_rate_rule(index, host, subset)
    if resource is None:
        return
    s = spec(resource)
    od = cluster.outlier_detection
    if not cluster.HasField("outlier_detection"):
        od.consecutive_5xx.value = 0
        od.enforcing_consecutive_5xx.value = 0
    od.failure_percentage_threshold.value = s.floor_percent
    od.failure_percentage_request_volume.value = s.min_requests
    od.failure_percentage_minimum_hosts.value = s.min_hosts
    od.enforcing_failure_percentage.value = s.enforcing_percent
    cluster.metadata.filter_metadata[METADATA].update({
        "failureRateRatio": s.ratio,
        "failureRateWindow": duration(parse_duration(s.window)).ToJsonString(),
    })
