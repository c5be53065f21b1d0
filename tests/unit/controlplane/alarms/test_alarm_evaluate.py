"""When alarm rules fire: error-rate windows, minimum traffic, cooldown, event matching.
Every clock here is a FakeClock; nothing waits."""

import pytest

from plait.controlplane.alarms.evaluate import Evaluator
from plait.controlplane.alarms.events import GovernanceEvent
from plait.controlplane.alarms.telemetry import (
    MAX_SERVICES,
    TelemetryReport,
    TelemetryWindow,
    UpstreamStats,
)
from plait.model import parse_resource
from plait.testing.clock import FakeClock


def error_rule(name="pricing-errors", *, threshold=0.2, window="30s", min_requests=50,
               cooldown="5m", service="pricing"):
    return parse_resource({
        "apiVersion": "plait.io/v1alpha1", "kind": "AlarmRule", "metadata": {"name": name},
        "spec": {"errorRate": {"service": service, "threshold": threshold, "window": window,
                               "minRequests": min_requests},
                 "webhook": {"url": "http://127.0.0.1:9/hook"}, "cooldown": cooldown}})


def event_rule(types, *, service=None, cooldown="1m", name="governance"):
    events = {"types": types, **({"service": service} if service else {})}
    return parse_resource({
        "apiVersion": "plait.io/v1alpha1", "kind": "AlarmRule", "metadata": {"name": name},
        "spec": {"events": events, "webhook": {"url": "http://127.0.0.1:9/hook"},
                 "cooldown": cooldown}})


def report(node, requests, errors, *, service="pricing", p99=None):
    return TelemetryReport(node, "web", 5.0, {service: UpstreamStats(requests, errors, None, p99)})


def event(type_, service="pricing", host=None):
    return GovernanceEvent(type=type_, service=service, node_id="web-1", time=1.0, host=host)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def window(clock):
    return TelemetryWindow(now=clock)


@pytest.fixture
def evaluator(clock):
    return Evaluator(now=clock)


def test_reports_of_every_proxy_add_up_within_the_window(window, clock):
    window.add(report("web-1", 40, 4, p99=120.0))
    window.add(report("web-2", 60, 16, p99=80.0))
    clock.advance(10)
    window.add(report("web-1", 100, 0))
    totals = window.totals("pricing", 30)
    assert (totals.requests, totals.errors, totals.reporters) == (200, 20, 2)
    assert totals.error_rate == 0.1 and totals.p99_ms_max == 120.0
    clock.advance(25)  # the first two reports are 35 s old now
    totals = window.totals("pricing", 30)
    assert (totals.requests, totals.errors, totals.reporters) == (100, 0, 1)
    assert window.totals("nobody", 30).requests == 0


def test_old_buckets_are_dropped_and_new_services_bounded(window, clock):
    window.add(report("web-1", 1, 0, service="old"))
    clock.advance(3602)
    for i in range(MAX_SERVICES):
        window.add(report("web-1", 1, 0, service=f"s{i}"))
    assert "old" not in window.services() and len(window.services()) == MAX_SERVICES
    window.add(report("web-1", 1, 0, service="one-too-many"))
    assert window.dropped == 1 and window.totals("one-too-many", 60).requests == 0


def test_fires_when_the_error_rate_reaches_the_threshold(window, evaluator):
    rules = [error_rule()]
    window.add(report("web-1", 100, 19))
    assert evaluator.check_error_rates(rules, window) == []  # 19%: below 20%
    window.add(report("web-2", 100, 21))  # 40 of 200: 20%
    [firing] = evaluator.check_error_rates(rules, window)
    assert (firing.rule, firing.service, firing.requests, firing.errors) == (
        "pricing-errors", "pricing", 200, 40)
    assert firing.value == 0.2 and firing.threshold == 0.2 and firing.window == 30
    assert firing.to_json()["rule"] == {"namespace": "default", "name": "pricing-errors"}


def test_not_below_min_requests(window, evaluator):
    rules = [error_rule(min_requests=50)]
    window.add(report("web-1", 49, 49))  # every request failed, but too few to judge
    assert evaluator.check_error_rates(rules, window) == []
    window.add(report("web-1", 1, 1))
    assert len(evaluator.check_error_rates(rules, window)) == 1


def test_errors_outside_the_window_do_not_count(window, evaluator, clock):
    rules = [error_rule(window="30s", min_requests=10)]
    window.add(report("web-1", 100, 90))
    clock.advance(31)
    window.add(report("web-1", 100, 5))
    assert evaluator.check_error_rates(rules, window) == []


def test_cooldown_holds_a_flapping_condition_to_one_alarm(window, evaluator, clock):
    rules = [error_rule(window="10s", min_requests=10, cooldown="1m")]
    fired = []
    for _ in range(5):  # bad for 10 s, good for 10 s, for 100 s
        window.add(report("web-1", 100, 50))
        fired += evaluator.check_error_rates(rules, window)
        clock.advance(12)
        window.add(report("web-1", 100, 0))
        fired += evaluator.check_error_rates(rules, window)
        clock.advance(8)
    assert len(fired) == 2  # at 0 s and, after the 1 minute cooldown, at 60 s


def test_a_lasting_condition_repeats_once_per_cooldown(window, evaluator, clock):
    rules = [error_rule(window="10s", min_requests=10, cooldown="30s")]
    count = 0
    for _ in range(20):  # 100 s, a bad report every 5 s, evaluated each time
        window.add(report("web-1", 100, 100))
        count += len(evaluator.check_error_rates(rules, window))
        clock.advance(5)
    assert count == 4  # at 0, 30, 60 and 90 s


def test_only_the_touched_services_are_evaluated(window, evaluator):
    rules = [error_rule(min_requests=1), error_rule("other", service="other", min_requests=1)]
    window.add(report("web-1", 10, 10))
    window.add(report("web-1", 10, 10, service="other"))
    fired = evaluator.check_error_rates(rules, window, services=["other"])
    assert [f.rule for f in fired] == ["other"]


def test_event_rules_match_type_and_service(evaluator):
    rules = [event_rule(["ejection", "breakerOpen"], service="pricing", cooldown="0s")]
    fired = evaluator.on_events(rules, [event("ejection"), event("return"),
                                        event("breakerOpen", service="cart"), event("breakerOpen")])
    assert [(f.event.type, f.service) for f in fired] == [("ejection", "pricing"),
                                                          ("breakerOpen", "pricing")]
    assert fired[0].to_json()["event"]["type"] == "ejection"


def test_event_cooldown_is_per_service_and_type(evaluator, clock):
    rules = [event_rule(["ejection", "breakerOpen"], cooldown="1m")]
    storm = [event("ejection", host=f"10.0.0.{i}:80") for i in range(5)]
    fired = evaluator.on_events(rules, [*storm, event("ejection", service="cart"),
                                        event("breakerOpen")])
    assert [(f.service, f.event.type) for f in fired] == [
        ("pricing", "ejection"), ("cart", "ejection"), ("pricing", "breakerOpen")]
    clock.advance(59)
    assert evaluator.on_events(rules, [event("ejection")]) == []
    clock.advance(1)
    assert len(evaluator.on_events(rules, [event("ejection")])) == 1


def test_rules_without_a_match_do_not_fire(evaluator):
    assert evaluator.on_events([error_rule()], [event("ejection")]) == []
    assert evaluator.on_events([], [event("ejection")]) == []
