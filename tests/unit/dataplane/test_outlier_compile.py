"""Bootstrap → outlier detection: Envoy's failure_percentage fields and Plait's
`plait.outlier` metadata become the failure-rate rule; anything out of range is refused
with its field path."""

from __future__ import annotations

import pytest

from plait.core.errors import ConfigError
from plait.dataplane.bootstrap import parse_bootstrap
from plait.dataplane.config import FailureRate, OutlierDetection
from plait.testing import sidecar as sc

CLUSTER = "static_resources.clusters[0]"
META = f"{CLUSTER}.metadata.filter_metadata['plait.outlier']"
ON = {"enforcing_failure_percentage": 100}


def outlier_of(**cluster_extra) -> OutlierDetection | None:
    doc = sc.bootstrap(listeners=[sc.listener("out", [sc.virtual_host("v", ["*"],
                                                                      [sc.route("c")])])],
                       clusters=[sc.cluster("c", [8080], **cluster_extra)])
    return parse_bootstrap(doc).snapshot.clusters["c"].outlier


def refusal(**cluster_extra) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        outlier_of(**cluster_extra)
    return info.value


def test_every_field_and_the_metadata():
    od = outlier_of(
        outlier_detection=sc.outlier_detection(
            consecutive_5xx=0, failure_percentage_threshold=20,
            failure_percentage_request_volume=10, failure_percentage_minimum_hosts=2,
            enforcing_failure_percentage=100, base_ejection_time=2),
        metadata=sc.failure_rate_metadata(ratio=2.5, window=1.5))
    assert od == OutlierDetection(
        consecutive_5xx=0, base_ejection_time=2.0,
        failure_rate=FailureRate(min_requests=10, ratio=2.5, floor_percent=20.0, window=1.5,
                                 min_hosts=2))


def test_defaults_are_envoys_and_the_window_is_the_interval():
    od = outlier_of(outlier_detection=sc.outlier_detection(interval=4, **ON))
    assert od.failure_rate == FailureRate(min_requests=50, ratio=0.0, floor_percent=85.0,
                                          window=4.0, min_hosts=5)


def test_the_window_may_be_a_number_of_seconds():
    od = outlier_of(outlier_detection=ON,
                    metadata={"filter_metadata": {"plait.outlier": {"failureRateWindow": 30}}})
    assert od.failure_rate.window == 30.0


def test_the_rule_is_off_unless_enforced():
    # Envoy enforces failure_percentage at 0% by default: detected, never acted on.
    od = outlier_of(outlier_detection=sc.outlier_detection(failure_percentage_threshold=20),
                    metadata=sc.failure_rate_metadata(ratio=2))
    assert od.failure_rate is None
    assert outlier_of(outlier_detection={}).failure_rate is None


@pytest.mark.parametrize("enforcing,chance", [(1, 0.01), (50, 0.5), (100, 1.0)])
def test_enforcement_is_compiled_into_the_chance_of_ejection(enforcing, chance):
    od = outlier_of(outlier_detection={"enforcing_failure_percentage": enforcing})
    assert od.failure_rate is not None and od.failure_rate.enforcing == chance


def test_zero_requests_or_hosts_is_one():
    od = outlier_of(outlier_detection={**ON, "failure_percentage_request_volume": 0,
                                       "failure_percentage_minimum_hosts": 0})
    assert (od.failure_rate.min_requests, od.failure_rate.min_hosts) == (1, 1)


def test_enforcing_consecutive_5xx_at_zero_turns_that_rule_off():
    assert outlier_of(outlier_detection={"enforcing_consecutive_5xx": 0}).consecutive_5xx == 0
    assert outlier_of(outlier_detection={"enforcing_consecutive_5xx": 100}).consecutive_5xx == 5
    assert outlier_of(outlier_detection={"consecutive_5xx": 0}).consecutive_5xx == 0


def consecutive(**fields) -> tuple:
    od = outlier_of(outlier_detection=fields)
    return (od.consecutive_5xx, od.enforcing_consecutive_5xx,
            od.consecutive_gateway_failure, od.enforcing_consecutive_gateway_failure)


def test_the_consecutive_rules_enforcing_percentages_are_chances_too():
    # unset: Envoy's 100% for 5xx; off (1.0 kept) while a rule is off
    assert consecutive() == (5, 1.0, 0, 1.0)
    assert consecutive(consecutive_5xx=3, enforcing_consecutive_5xx=25) == (3, 0.25, 0, 1.0)
    assert consecutive(consecutive_gateway_failure=2,
                       enforcing_consecutive_gateway_failure=40) == (5, 1.0, 2, 0.4)
    # a gateway threshold alone is enforced (as Plait always read it; Istio sends both);
    # a percentage alone takes Envoy's threshold, 5; 0% is off
    assert consecutive(consecutive_gateway_failure=2)[2:] == (2, 1.0)
    assert consecutive(enforcing_consecutive_gateway_failure=100)[2:] == (5, 1.0)
    assert consecutive(consecutive_gateway_failure=2,
                       enforcing_consecutive_gateway_failure=0)[2:] == (0, 1.0)


@pytest.mark.parametrize("outlier,metadata,path", [
    ({**ON, "failure_percentage_threshold": 101}, None,
     f"{CLUSTER}.outlier_detection.failure_percentage_threshold"),
    ({"enforcing_failure_percentage": 150}, None,
     f"{CLUSTER}.outlier_detection.enforcing_failure_percentage"),
    ({"enforcing_consecutive_5xx": 101}, None,
     f"{CLUSTER}.outlier_detection.enforcing_consecutive_5xx"),
    ({"enforcing_consecutive_gateway_failure": 200}, None,
     f"{CLUSTER}.outlier_detection.enforcing_consecutive_gateway_failure"),
    (ON, {"failureRateRatio": 0.5}, f"{META}.failureRateRatio"),
    (ON, {"failureRateRatio": -1}, f"{META}.failureRateRatio"),
    (ON, {"failureRateRatio": "2"}, f"{META}.failureRateRatio"),
    (ON, {"failureRateRatio": 1e9}, f"{META}.failureRateRatio"),
    (ON, {"failureRateWindow": "soon"}, f"{META}.failureRateWindow"),
    (ON, {"failureRateWindow": "0.01s"}, f"{META}.failureRateWindow"),
    (ON, {"failureRateWindow": "2h"}, f"{META}.failureRateWindow"),
    (ON, {"failureRateWindow": -3}, f"{META}.failureRateWindow"),
    (ON, {"failureRateWindow": True}, f"{META}.failureRateWindow"),
    (ON, {"failureRateRatoi": 2}, f"{META}.failureRateRatoi"),
    # checked while the rule is off too: a typo is never ignored
    ({}, {"failureRateWindow": "soon"}, f"{META}.failureRateWindow"),
    ({**ON, "interval": "7200s"}, None, f"{CLUSTER}.outlier_detection.interval"),
    (None, {"failureRateRatio": 2}, META),
])
def test_bad_values_name_the_field(outlier, metadata, path):
    extra: dict = {}
    if outlier is not None:
        extra["outlier_detection"] = outlier
    if metadata is not None:
        extra["metadata"] = {"filter_metadata": {"plait.outlier": metadata}}
    assert refusal(**extra).path == path


def test_an_interval_unfit_for_a_window_is_fine_while_the_rule_is_off():
    assert outlier_of(outlier_detection={"interval": "7200s"}).interval == 7200.0
