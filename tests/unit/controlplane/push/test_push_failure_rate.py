"""FailureRateEjection → the failure-rate rule of the callers' outlier detection: which
clusters get which rule, in Envoy's shape plus the `plait.outlier` metadata, how it joins
a DestinationRule's outlierDetection, and that the sidecar's own compiler takes it."""

from __future__ import annotations

from google.protobuf import json_format

from plait.controlplane.push.proxy import ProxyInfo
from plait.controlplane.push.translate import translate
from plait.dataplane.config import FailureRate, OutlierDetection
from plait.testing.meshview import FakeMeshView, compiled_snapshot
from plait.xds.resources import CLUSTER

RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pricing}
spec:
  host: pricing
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
WITH_OUTLIER = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pricing}
spec:
  host: pricing
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, baseEjectionTime: 10s, maxEjectionPercent: 50}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {outlierDetection: {consecutiveGatewayErrors: 2, interval: 5s}}
  - {name: v2, labels: {version: v2}}
"""


def ejection(name: str, *, subset: str = "", body: str = "") -> str:
    return f"""
apiVersion: plait.io/v1alpha1
kind: FailureRateEjection
metadata: {{name: {name}}}
spec:
  host: pricing
  {f"subset: {subset}" if subset else ""}
  {body}
"""


def mesh(*documents: str, rule: str = RULE) -> FakeMeshView:
    view = FakeMeshView()
    view.register("pricing", "10.0.0.1", 8080, version="v1")
    view.register("pricing", "10.0.0.2", 8080, version="v2")
    view.register("stock", "10.0.2.1", 8080)
    view.apply_yaml("\n---\n".join([rule, *documents]))
    return view


WEB = ProxyInfo.from_metadata("web-1", {"app": "web", "app_port": 9000})


def compiled(view, proxy: ProxyInfo = WEB) -> dict:
    """Cluster name → the sidecar's compiled outlier detection, from the translator."""
    out = translate(view, proxy)
    snapshot = compiled_snapshot(out)
    return {name: c.outlier for name, c in snapshot.clusters.items()
            if name.startswith("outbound|")}


def rules(view, proxy: ProxyInfo = WEB) -> dict:
    return {name: od.failure_rate if od is not None else None
            for name, od in compiled(view, proxy).items()}


DEFAULTS = FailureRate(min_requests=10, ratio=2.0, floor_percent=20.0, window=30.0,
                       min_hosts=2)


def test_the_defaults_reach_every_cluster_of_the_host_as_the_kind_documents_them():
    assert rules(mesh(ejection("pricing"))) == {
        "outbound|8080||pricing": DEFAULTS, "outbound|8080|v1|pricing": DEFAULTS,
        "outbound|8080|v2|pricing": DEFAULTS, "outbound|8080||stock": None}


def test_every_field_in_envoys_shape_and_the_metadata():
    view = mesh(ejection("pricing", body="""minRequests: 40
  ratio: 3.5
  floorPercent: 35
  window: 1m30s
  minHosts: 4
  enforcingPercent: 60"""))
    assert rules(view)["outbound|8080||pricing"] == FailureRate(
        min_requests=40, ratio=3.5, floor_percent=35.0, window=90.0, min_hosts=4,
        enforcing=0.6)
    sent = translate(view, WEB)[CLUSTER]["outbound|8080||pricing"]
    od = sent.outlier_detection
    assert (od.failure_percentage_threshold.value, od.failure_percentage_request_volume.value,
            od.failure_percentage_minimum_hosts.value,
            od.enforcing_failure_percentage.value) == (35, 40, 4, 60)
    assert json_format.MessageToDict(sent.metadata.filter_metadata["plait.outlier"]) == {
        "failureRateRatio": 3.5, "failureRateWindow": "90s"}


def test_enforcing_100_by_default_and_0_turns_the_rule_off_in_the_sidecar():
    sent = translate(mesh(ejection("pricing")), WEB)[CLUSTER]["outbound|8080||pricing"]
    assert sent.outlier_detection.enforcing_failure_percentage.value == 100
    view = mesh(ejection("pricing", body="enforcingPercent: 0"))
    od = translate(view, WEB)[CLUSTER]["outbound|8080||pricing"].outlier_detection
    assert od.enforcing_failure_percentage.value == 0
    assert set(rules(view).values()) == {None}


def test_without_a_destination_rule_outlier_section_the_rule_is_the_only_one_in_force():
    view = mesh(ejection("pricing"))
    od = translate(view, WEB)[CLUSTER]["outbound|8080||pricing"].outlier_detection
    assert (od.consecutive_5xx.value, od.enforcing_consecutive_5xx.value) == (0, 0)
    assert not od.HasField("base_ejection_time") and not od.HasField("max_ejection_percent")
    # compiled: no consecutive rule, Envoy's defaults for the ejection itself
    assert compiled(view)["outbound|8080||pricing"] == OutlierDetection(
        consecutive_5xx=0, consecutive_gateway_failure=0, base_ejection_time=30.0,
        max_ejection_percent=10.0, failure_rate=DEFAULTS)


def test_it_joins_the_destination_rules_outlier_detection_section_by_section():
    got = compiled(mesh(ejection("pricing"), rule=WITH_OUTLIER))
    assert got["outbound|8080||pricing"] == OutlierDetection(
        consecutive_5xx=3, base_ejection_time=10.0, max_ejection_percent=50.0,
        failure_rate=DEFAULTS)
    # the subset's own outlier section replaced the rule's (Istio); the rule joins it
    assert got["outbound|8080|v1|pricing"] == OutlierDetection(
        consecutive_5xx=5, consecutive_gateway_failure=2, interval=5.0,
        failure_rate=DEFAULTS)
    assert got["outbound|8080|v2|pricing"] == got["outbound|8080||pricing"]
    # without the rule, the DestinationRule's section alone, as before
    alone = compiled(mesh(rule=WITH_OUTLIER))
    assert alone["outbound|8080||pricing"] == OutlierDetection(
        consecutive_5xx=3, base_ejection_time=10.0, max_ejection_percent=50.0)


def test_a_subset_rule_covers_that_subset_only_and_wins_over_the_host_wide_one():
    got = rules(mesh(ejection("v2-only", subset="v2", body="ratio: 5")))
    assert got["outbound|8080||pricing"] is None and got["outbound|8080|v1|pricing"] is None
    assert got["outbound|8080|v2|pricing"].ratio == 5.0

    got = rules(mesh(ejection("a-wide", body="ratio: 3"), ejection("b-wide", body="ratio: 4"),
                     ejection("z-v2", subset="v2", body="ratio: 6")))
    # one rule per cluster: the subset's own first, then the first by namespace and name
    assert got["outbound|8080|v2|pricing"].ratio == 6.0
    assert got["outbound|8080|v1|pricing"].ratio == 3.0
    assert got["outbound|8080||pricing"].ratio == 3.0


def test_a_rule_for_a_subset_nobody_defines_changes_nothing():
    assert set(rules(mesh(ejection("v3", subset="v3"))).values()) == {None}


def test_only_callers_get_it_and_proxyless_clients_do_not():
    view = mesh(ejection("pricing"))
    pricing = ProxyInfo.from_metadata("pricing-1", {"app": "pricing", "app_port": 9000,
                                                    "dependencies": ["stock"]})
    assert set(rules(view, pricing).values()) == {None}
    out = translate(view, ProxyInfo(node_id="g"), listener_names=frozenset({"pricing"}))
    assert out[CLUSTER] and not any(c.HasField("outlier_detection") or c.metadata.filter_metadata
                                    for c in out[CLUSTER].values())


def test_deleting_the_rule_takes_it_off_and_its_outlier_detection_with_it():
    view = mesh(ejection("pricing"))
    assert compiled(view)["outbound|8080||pricing"] is not None
    view.delete("FailureRateEjection", "pricing")
    assert set(compiled(view).values()) == {None}
