"""Locality load balancing: a caller's own zone first, then its region, then the rest.

Istio's `loadBalancer.localityLbSetting`, for one caller and one cluster, as Envoy
expresses it in a ClusterLoadAssignment:

* **failover** (the default): endpoints get priorities, 0 for the caller's own region and
  zone, 1 for the rest of its region, 2 for the regions `failover` names for the caller's
  region, 3 for all others (only the levels present are kept, renumbered from 0, as Envoy
  and gRPC want them contiguous). The sidecar sends everything to priority 0 while enough
  of it is healthy and spills the rest to the next level as hosts there are ejected or
  unhealthy (Envoy's overprovisioning factor 1.4), so a zone's callers stay in their zone
  and move out only when it fails. As in Istio this needs `outlierDetection` on the
  cluster, or a failing local endpoint would never be taken out and traffic would never
  move; without it every endpoint stays at priority 0. A FailureRateEjection alone does
  not count: it compares an endpoint with the others the caller calls, which under
  failover are only its own zone's, so a zone failing as a whole (or a zone of one
  endpoint) would never have an outlier and would keep its callers.
* **failoverPriority** (a list of label names): priorities instead by how many of those
  labels, in order, an endpoint's instance shares with the caller (all: 0).
* **distribute**: for callers in the `from` locality, traffic is split between
  localities by the `to` percentages, all at priority 0; localities not listed get none.
  It excludes failover (as in Istio) and needs no outlier detection.
  A percentage shared by several matching localities is divided evenly between them; a
  locality matching several patterns counts under the first, in the order written.
  The sidecar balances by endpoint weight, so each endpoint gets its locality's share
  divided by its number of endpoints (gRPC reads the locality weights).

A caller's locality is its `region` and `zone` labels (node metadata `labels`), an
endpoint's the `region` and `zone` labels of its instance, as the index groups them.
`enabled: false` turns all of this off; so does a caller without a region or zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

REGION, ZONE = "region", "zone"
SAME_ZONE, SAME_REGION, FAILOVER_REGION, ELSEWHERE = range(4)
WEIGHT_SCALE = 100  # endpoint weight per percent of a locality's share


@dataclass(frozen=True, slots=True)
class Client:
    """What a cluster's endpoints depend on about one caller (hashable: a memo key)."""

    region: str
    zone: str
    failover: tuple[str, ...] = ()  # regions to try after the caller's own
    priority_labels: tuple[tuple[str, str], ...] = ()  # failoverPriority: (name, caller's value)
    distribute: tuple[tuple[str, int], ...] = ()  # (locality pattern, percent)


def client_for(labels: dict[str, str], *, setting, outlier_detection: bool) -> Client | None:
    """A cluster's locality settings for a caller with `labels`, given the cluster's
    `localityLbSetting` (or None) and whether it has outlier detection. None when
    locality plays no part (then every caller gets the same endpoints)."""
    region, zone = labels.get(REGION, ""), labels.get(ZONE, "")
    if not (region or zone):
        return None
    if setting is not None and setting.enabled is False:
        return None
    here = f"{region}/{zone}"
    if setting is not None and setting.distribute:  # then no failover, as in Istio
        for rule in setting.distribute:
            if _matches(rule.from_, here):
                return Client(region, zone, distribute=tuple(rule.to.items()))
        return None
    if not outlier_detection:
        return None  # nothing would ever move traffic down a priority (see above)
    if setting is not None and setting.failover_priority:
        return Client(region, zone, priority_labels=tuple(
            (name, labels.get(name, "")) for name in setting.failover_priority))
    failover = tuple(f.to for f in (setting.failover if setting is not None else ())
                     if f.from_ == region)
    return Client(region, zone, failover=failover)


def priority(client: Client, labels: dict[str, str]) -> int:
    """The raw priority level of an endpoint whose instance has `labels`."""
    if client.priority_labels:
        matched = 0
        for name, value in client.priority_labels:
            if labels.get(name, "") != value:
                break
            matched += 1
        return len(client.priority_labels) - matched
    region, zone = labels.get(REGION, ""), labels.get(ZONE, "")
    if region == client.region:
        return SAME_ZONE if zone == client.zone else SAME_REGION
    return FAILOVER_REGION if region in client.failover else ELSEWHERE


def shares(client: Client, localities: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """distribute: each locality's percentage of the traffic (absent: none)."""
    matching: dict[str, list[tuple[str, str]]] = {}
    for locality in localities:
        for pattern, _ in client.distribute:
            if _matches(pattern, "/".join(locality)):
                matching.setdefault(pattern, []).append(locality)
                break  # a locality counts under the first pattern it matches
    out: dict[tuple[str, str], float] = {}
    for pattern, percent in client.distribute:
        members = matching.get(pattern, [])
        for locality in members:
            out[locality] = percent / len(members)
    return {k: v for k, v in out.items() if v > 0}


def _matches(pattern: str, locality: str) -> bool:
    """Istio's locality patterns: `region`, `region/zone`, `region/zone/subzone`, with `*`
    for any; a shorter pattern covers everything below it."""
    parts = pattern.split("/")
    have = locality.split("/")
    return all(fnmatchcase(have[k] if k < len(have) else "", p) for k, p in enumerate(parts))
