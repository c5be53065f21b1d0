"""Locality load balancing: the same cluster's endpoints, prioritised for each caller's
zone and region (push.locality), and compiled by the sidecar into endpoint priorities."""

from __future__ import annotations

import yaml

from plait.controlplane.push.proxy import ProxyInfo
from plait.controlplane.push.translate import translate
from plait.testing.meshview import FakeMeshView, compiled_snapshot
from plait.xds.resources import CLUSTER, ENDPOINT

CLUSTER_NAME = "outbound|80||pay"
OUTLIER = {"outlierDetection": {"consecutive5xxErrors": 2}}


def pay_mesh(traffic_policy: dict = OUTLIER) -> FakeMeshView:
    view = FakeMeshView()
    view.register("pay", "10.0.0.1", 80, region="east", zone="a")
    view.register("pay", "10.0.0.2", 80, region="east", zone="a")
    view.register("pay", "10.0.0.3", 80, region="east", zone="b")
    view.register("pay", "10.0.0.4", 80, region="west", zone="c")
    view.register("pay", "10.0.0.5", 80, region="north", zone="d", tier="gold")
    view.apply_yaml(yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "pay"},
        "spec": {"host": "pay", "trafficPolicy": traffic_policy}}))
    return view


def locality_lb(**setting) -> dict:
    return {**OUTLIER, "loadBalancer": {"localityLbSetting": setting}}


def priorities(view, **labels) -> dict[str, int]:
    """Endpoint address → priority, as the caller's sidecar compiles them."""
    out = translate(view, ProxyInfo.from_metadata("c", {"app": "web", "labels": labels}))
    snapshot = compiled_snapshot(out)
    return {e.host: e.priority for e in snapshot.clusters[CLUSTER_NAME].endpoints}


def weights(view, **labels) -> dict[str, int]:
    out = translate(view, ProxyInfo.from_metadata("c", {"app": "web", "labels": labels}))
    return {e.endpoint.address.socket_address.address: e.load_balancing_weight.value
            for loc in out[ENDPOINT][CLUSTER_NAME].endpoints for e in loc.lb_endpoints}


def test_own_zone_first_then_own_region_then_the_rest():
    assert priorities(pay_mesh(), region="east", zone="a") == {
        "10.0.0.1": 0, "10.0.0.2": 0, "10.0.0.3": 1, "10.0.0.4": 2, "10.0.0.5": 2}


def test_levels_are_renumbered_from_zero_without_gaps():
    # no endpoint in the caller's own zone: its region comes first, at 0
    assert priorities(pay_mesh(), region="east", zone="z") == {
        "10.0.0.1": 0, "10.0.0.2": 0, "10.0.0.3": 0, "10.0.0.4": 1, "10.0.0.5": 1}


def test_failover_names_the_region_to_try_after_the_callers_own():
    view = pay_mesh(locality_lb(failover=[{"from": "east", "to": "north"}]))
    assert priorities(view, region="east", zone="a") == {
        "10.0.0.1": 0, "10.0.0.2": 0, "10.0.0.3": 1, "10.0.0.5": 2, "10.0.0.4": 3}
    # the rule is for callers in east only
    assert priorities(view, region="west", zone="c")["10.0.0.5"] == 1


def test_failover_priority_ranks_by_leading_labels_shared_with_the_caller():
    view = pay_mesh(locality_lb(failoverPriority=["region", "tier"]))
    assert priorities(view, region="north", zone="x", tier="gold") == {
        "10.0.0.5": 0, "10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 1, "10.0.0.4": 1}


def test_no_priorities_without_outlier_detection_a_locality_or_when_disabled():
    flat = {f"10.0.0.{i}": 0 for i in range(1, 6)}
    assert priorities(pay_mesh({"loadBalancer": {"simple": "ROUND_ROBIN"}}), region="east",
                      zone="a") == flat
    assert priorities(pay_mesh(), version="v1") == flat
    disabled = pay_mesh(locality_lb(enabled=False))
    assert priorities(disabled, region="east", zone="a") == flat


def test_a_failure_rate_ejection_alone_does_not_turn_failover_on():
    # Its rule compares an endpoint with the others the caller calls; under failover
    # those are only the caller's zone, so a zone failing as a whole would never be
    # ejected and would keep its callers (push.locality).
    view = pay_mesh({"loadBalancer": {"simple": "ROUND_ROBIN"}})
    view.apply_yaml(yaml.safe_dump({
        "apiVersion": "plait.io/v1alpha1", "kind": "FailureRateEjection",
        "metadata": {"name": "pay"}, "spec": {"host": "pay"}}))
    assert set(priorities(view, region="east", zone="a").values()) == {0}


def test_distribute_splits_by_percent_and_leaves_out_unlisted_localities():
    # (without outlier detection: distribute needs none)
    view = pay_mesh({"loadBalancer": {"localityLbSetting": {"distribute": [
        {"from": "east/a/*", "to": {"east/a/*": 60, "east/b": 20, "west/*": 20}}]}}})
    # zone a's 60% over its two endpoints, 20% each for the other two localities
    assert weights(view, region="east", zone="a") == {
        "10.0.0.1": 3000, "10.0.0.2": 3000, "10.0.0.3": 2000, "10.0.0.4": 2000}
    # callers elsewhere are not covered by the rule: everyone, evenly
    assert set(weights(view, region="west", zone="c").values()) == {0}
    assert priorities(view, region="east", zone="a") == {
        f"10.0.0.{i}": 0 for i in range(1, 5)}


def test_callers_in_different_zones_share_the_cluster_but_not_the_endpoints():
    view = pay_mesh()
    a = translate(view, ProxyInfo.from_metadata("1", {"labels": {"region": "east", "zone": "a"}}))
    b = translate(view, ProxyInfo.from_metadata("2", {"labels": {"region": "east", "zone": "b"}}))
    assert a[CLUSTER][CLUSTER_NAME] == b[CLUSTER][CLUSTER_NAME]
    assert a[ENDPOINT][CLUSTER_NAME] != b[ENDPOINT][CLUSTER_NAME]
