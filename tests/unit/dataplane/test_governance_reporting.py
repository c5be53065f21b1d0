"""Governance events and telemetry: the worker's bounded buffer, per-second aggregation,
the reporter's batching and its behaviour when the control plane is away, and telemetry
computed from two stats snapshots."""

from __future__ import annotations

import asyncio

import pytest

from plait.controlplane.api.governance_routes import _EVENTS, _TELEMETRY
from plait.dataplane.events import EventBuffer, service_of
from plait.dataplane.http.client import ClientError
from plait.dataplane.stats import DURATION_BOUNDS, Stats, merge
from plait.dataplane.telemetry import BATCH, Reporter, quantile, upstream_report
from plait.testing.clock import FakeClock


def buffer(capacity: int = 1000) -> EventBuffer:
    return EventBuffer(capacity=capacity, wall=lambda: 1_700_000_000.0, monotonic=lambda: 0.0)


def test_the_buffer_keeps_the_newest_and_counts_what_it_dropped():
    b = buffer(capacity=3)
    for i in range(5):
        b.add("breakerOpen", service="s", detail={"i": i})
    drained = b.drain()
    assert [e["detail"]["i"] for e in drained["events"]] == [2, 3, 4]
    assert drained["dropped"] == 2
    assert b.drain() == {"events": [], "dropped": 0}


def test_refusals_are_aggregated_per_rule_per_second():
    b = buffer()
    for now in (0.1, 0.2, 0.9, 1.0, 1.5):
        b.count("rateLimited", rule="r", service="s", now=now)
    b.count("rateLimited", rule="other", service="s", now=0.5)
    events = b.drain()["events"]
    got = sorted((e["time"], e["detail"]["rule"], e["detail"]["count"]) for e in events)
    assert got == [(1_700_000_000.0, "other", 1), (1_700_000_000.0, "r", 3),
                   (1_700_000_001.0, "r", 2)]


def test_cluster_events_use_the_control_plane_vocabulary():
    b = buffer()
    b.cluster_event("ejection", "outbound|80|v2|reviews", "10.0.0.1:80")
    b.cluster_event("hc_failed", "static-cluster", "10.0.0.2:80")
    b.cluster_event("hc_passed", "inbound|8080||web", "127.0.0.1:8080")
    events = b.drain()["events"]
    assert [(e["type"], e["service"], e["detail"]["source"]) for e in events] == [
        ("ejection", "reviews", "outlierDetection"), ("ejection", "static-cluster", "healthCheck"),
        ("return", "web", "healthCheck")]
    for e in events:
        e["nodeId"] = "n1"
    _EVENTS.validate_python(events)


def test_service_of():
    assert service_of("outbound|9080||reviews") == "reviews"
    assert service_of("outbound|9080|v1|reviews.default") == "reviews.default"
    assert service_of("app") == "app"


def test_quantiles_interpolate_within_buckets():
    counts = [0] * (len(DURATION_BOUNDS) + 1)
    counts[DURATION_BOUNDS.index(0.01)] = 100  # all in (0.005, 0.01]
    assert quantile(0.5, counts) == pytest.approx(0.0075)
    assert quantile(0.99, counts) == pytest.approx(0.00995)
    assert quantile(0.5, [0] * len(counts)) is None
    counts[-1] = 1000
    assert quantile(0.99, counts) == DURATION_BOUNDS[-1]


def snapshot(stats: Stats) -> dict:
    return merge([stats.snapshot()])


def test_telemetry_is_the_difference_of_two_snapshots_per_service():
    stats = Stats()
    v1, v2 = stats.cluster("outbound|80|v1|pricing"), stats.cluster("outbound|80|v2|pricing")
    inbound = stats.cluster("inbound|8080||web")
    v1.rq_by_code[200] = 5
    v1.duration.observe(0.003)
    before = snapshot(stats)
    v1.rq_by_code[200] += 8
    v1.rq_by_code[503] = 1
    v2.rq_by_code[0] = 1  # the client got no answer: an error too
    for _ in range(10):
        v1.duration.observe(0.02)
    inbound.rq_by_code[200] = 50
    report = upstream_report(before, snapshot(stats))
    assert list(report) == ["pricing"]
    p = report["pricing"]
    assert (p["requests"], p["errors"]) == (10, 2)
    assert 10.0 < p["p50Ms"] <= 25.0 and 10.0 < p["p99Ms"] <= 25.0
    assert upstream_report(snapshot(stats), snapshot(stats)) == {}
    _TELEMETRY.validate_python({"nodeId": "n", "app": "web", "window": 5.0, "upstreams": report})


class FakePost:
    def __init__(self, script=()) -> None:
        self.script = list(script)  # statuses or exceptions, then 200 forever
        self.calls = []

    async def __call__(self, method, url, body):
        self.calls.append((url.rsplit("/api/v1/", 1)[1], body))
        outcome = self.script.pop(0) if self.script else 200
        if isinstance(outcome, Exception):
            raise outcome
        return outcome, {}


def reporter(post, drained, *, health=None, stats=None, clock=None):
    async def gather():
        out, drained[:] = list(drained), []
        return out

    async def current():
        return snapshot(stats or Stats())

    counters = Stats()
    rep = Reporter(registry="http://cp/", node_id="web-1", app="web", stats=current,
                   gather=gather, counters=counters, set_healthy=health, post=post,
                   capacity=10, monotonic=clock or FakeClock())
    return rep, counters


def events(n: int, service: str = "") -> dict:
    return {"events": [{"type": "breakerOpen", "service": service, "cluster": None,
                        "host": None, "time": 1.0, "detail": {"i": i}} for i in range(n)],
            "dropped": 0}


def test_events_go_in_batches_with_the_node_and_app_filled_in():
    post = FakePost()
    drained = [events(3), events(2, "pricing")]
    rep, counters = reporter(post, drained)

    async def go():
        await rep.collect()
        await rep.send_events()

    asyncio.run(go())
    (path, batch), = post.calls
    assert path == "events" and len(batch) == 5
    assert {e["service"] for e in batch} == {"web", "pricing"}
    assert {e["nodeId"] for e in batch} == {"web-1"}
    assert counters.events_sent == 5
    _EVENTS.validate_python(batch)


def test_a_control_plane_that_is_away_keeps_events_bounded_until_it_is_back():
    post = FakePost([ClientError("refused"), 503])
    drained = []
    rep, counters = reporter(post, drained)

    async def tick(new: int):
        drained.append(events(new))
        await rep.collect()
        await rep.send_events()

    async def go():
        await tick(6)  # refused: kept
        await tick(6)  # 503: kept, but only the newest 10 fit
        assert len(rep.pending) == 10 and counters.events_dropped == 2
        await tick(0)  # back: everything goes
        assert not rep.pending

    asyncio.run(go())
    assert counters.reports_failed == 2 and counters.events_sent == 10
    assert [e["detail"]["i"] for e in post.calls[-1][1]] == [2, 3, 4, 5, 0, 1, 2, 3, 4, 5]


def test_a_batch_refused_as_invalid_is_dropped_not_retried():
    post = FakePost([400])
    rep, counters = reporter(post, [events(BATCH + 1)])
    rep.pending = type(rep.pending)(maxlen=BATCH * 2)

    async def go():
        await rep.collect()
        await rep.send_events()

    asyncio.run(go())
    assert [len(body) for _, body in post.calls] == [BATCH, 1]
    assert counters.events_dropped == BATCH and counters.events_sent == 1


def test_the_app_health_goes_to_the_registration():
    seen = []
    drained = [{"events": [], "dropped": 0, "inbound_unhealthy": False},
               {"events": [], "dropped": 0, "inbound_unhealthy": True}]
    rep, _ = reporter(FakePost(), drained, health=seen.append)
    asyncio.run(rep.collect())
    asyncio.run(rep.collect())
    assert seen == [False, True]


def test_telemetry_reports_cover_the_time_since_the_last_one_that_got_through():
    clock = FakeClock(100.0)
    stats = Stats()
    pricing = stats.cluster("outbound|80||pricing")
    post = FakePost([ClientError("down")])
    rep, counters = reporter(post, [], stats=stats, clock=clock)

    async def go():
        pricing.rq_by_code[200] = 3
        clock.advance(5)
        await rep.send_telemetry()  # fails: nothing forgotten
        pricing.rq_by_code[200] = 7
        clock.advance(5)
        await rep.send_telemetry()
        clock.advance(5)
        await rep.send_telemetry()  # nothing new: nothing sent

    asyncio.run(go())
    assert counters.reports_failed == 1
    (_, first), (_, second) = post.calls
    assert second["upstreams"]["pricing"]["requests"] == 7 and second["window"] == 10.0
    assert second["app"] == "web" and second["nodeId"] == "web-1"
    _TELEMETRY.validate_python(second)
