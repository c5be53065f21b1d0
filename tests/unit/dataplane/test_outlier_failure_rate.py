"""The outlier detector's failure-rate rule: its arithmetic (request volume, the multiple of
the rest of the cluster, the floor, the hosts with data), the sliding window, ejection
under max_ejection_percent, the window cleared on ejection, and the timer the detector
owns, which the cluster manager starts and stops with the cluster.

The arithmetic is driven by `tick()` on a loop whose timers the test fires, so no test
waits for a clock; the cluster-manager tests use a real loop but only look at handles.
"""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace

import pytest

from plait.dataplane.config import (
    ClusterConfig, Endpoint, FailureRate, OutlierDetection,
)
from plait.dataplane.stats import Stats
from plait.dataplane.upstream import outlier
from plait.dataplane.upstream.cluster import ClusterManager
from plait.dataplane.upstream.connection import Host
from plait.dataplane.upstream.outlier import BUCKETS, OutlierDetector, Window
from plait.testing.outlier import FakeCluster


class FakeLoop:
    """Timers held for the test to fire, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list = []  # [when, callback, args, handle]

    def time(self) -> float:
        return self.now

    def call_at(self, when, callback, *args):
        handle = SimpleNamespace(cancelled=False)
        handle.cancel = lambda: setattr(handle, "cancelled", True)
        self.timers.append((when, callback, args, handle))
        return handle

    def call_later(self, delay, callback, *args):
        return self.call_at(self.now + delay, callback, *args)

    def pending(self) -> list:
        return [t for t in self.timers if not t[3].cancelled]

    def run_until(self, when: float) -> None:
        """Fire every live timer due by `when`, in order, moving the clock to each."""
        while True:
            due = sorted((t for t in self.pending() if t[0] <= when), key=lambda t: t[0])
            if not due:
                break
            t = due[0]
            self.timers.remove(t)
            self.now = t[0]
            t[1](*t[2])
        self.now = when


@pytest.fixture
def loop(monkeypatch):
    fake = FakeLoop()
    monkeypatch.setattr(outlier, "asyncio", SimpleNamespace(get_running_loop=lambda: fake))
    return fake


def detector(n: int = 3, *, max_ejection_percent: float = 100, base_ejection_time=30.0,
             **rule) -> tuple[OutlierDetector, FakeCluster, list]:
    rule = {"min_requests": 10, "ratio": 2.0, "floor_percent": 20, "window": 10.0,
            "min_hosts": 2, **rule}
    cluster = FakeCluster(n)
    events: list = []
    config = OutlierDetection(consecutive_5xx=0, max_ejection_percent=max_ejection_percent,
                              base_ejection_time=base_ejection_time,
                              failure_rate=FailureRate(**rule))
    return (OutlierDetector(config, cluster, on_event=lambda *e: events.append(e)),
            cluster, events)


def serve(det: OutlierDetector, host: Host, requests: int, failures: int) -> None:
    """`requests` tries on `host`, the first `failures` of them failed (500s, and a
    connect failure among them: no response counts as a failure too)."""
    for i in range(requests):
        det.observe(host, 0 if i == 0 and failures else 500 if i < failures else 200)


def bucket(det: OutlierDetector, *counts: tuple[int, int]) -> None:
    """One bucket: (requests, failures) per host, in host order; then the tick."""
    for host, (requests, failures) in zip(det.cluster.hosts, counts):
        serve(det, host, requests, failures)
    det.tick()


def ejected(cluster: FakeCluster) -> list[int]:
    return [i for i, h in enumerate(cluster.hosts) if h.ejected]


# -- the arithmetic ------------------------------------------------------------------------

def test_a_host_failing_far_more_often_than_the_rest_is_ejected(loop):
    det, cluster, events = detector()
    bucket(det, (10, 5), (10, 0), (10, 1))
    assert ejected(cluster) == [0]
    assert events == [("ejection", "c", cluster.hosts[0].key)]
    assert cluster.stats.outlier_ejections == 1
    assert cluster.stats.outlier_by_reason == {"failure_rate": 1}


def test_observe_counts_tries_and_failures_as_the_consecutive_rule_does():
    det, cluster, _ = detector()
    h = cluster.hosts[0]
    for status in (200, 404, 500, 0, 302, 503):
        det.observe(h, status)
    assert (h.bucket_requests, h.bucket_failures) == (6, 3)


@pytest.mark.parametrize("requests,out", [(9, []), (10, [0])])
def test_a_host_is_judged_from_min_requests_on(loop, requests, out):
    det, cluster, _ = detector(min_requests=10)
    bucket(det, (requests, 6), (10, 0), (10, 0))
    assert ejected(cluster) == out


@pytest.mark.parametrize("rest_failures,out", [(5, [0]), (6, [])])
def test_the_rate_must_be_at_least_ratio_times_the_rest(loop, rest_failures, out):
    # 5 of 10 against the rest's 5 of 20: exactly 2 x 25%, ejected at the edge.
    # Against 6 of 20 (30%) 50% is short of 2 x 30%.
    det, cluster, _ = detector(ratio=2.0)
    bucket(det, (10, 5), (10, rest_failures - rest_failures // 2), (10, rest_failures // 2))
    assert ejected(cluster) == out


@pytest.mark.parametrize("failures,out", [(1, []), (2, [0])])
def test_the_rate_must_reach_the_floor(loop, failures, out):
    # The rest fail never, so any rate beats ratio x 0; the floor (20%) decides,
    # and 2 of 10 is exactly on it.
    det, cluster, _ = detector(floor_percent=20)
    bucket(det, (10, failures), (10, 0), (10, 0))
    assert ejected(cluster) == out


def test_a_host_that_never_failed_is_no_outlier_even_with_no_floor(loop):
    det, cluster, _ = detector(floor_percent=0)
    bucket(det, (10, 0), (10, 0), (10, 0))
    assert ejected(cluster) == []


@pytest.mark.parametrize("third,out", [(9, []), (10, [0])])
def test_nobody_is_judged_until_min_hosts_have_min_requests(loop, third, out):
    det, cluster, _ = detector(min_hosts=3)
    bucket(det, (10, 8), (10, 0), (third, 0))
    assert ejected(cluster) == out


def test_with_a_ratio_a_host_is_not_judged_against_a_rest_with_no_requests(loop):
    det, cluster, _ = detector(min_hosts=1, ratio=2.0)
    bucket(det, (10, 8), (0, 0), (0, 0))
    assert ejected(cluster) == []


def test_ratio_zero_is_envoys_failure_percentage_the_floor_alone(loop):
    det, cluster, _ = detector(min_hosts=1, ratio=0.0, floor_percent=85)
    bucket(det, (10, 8), (0, 0), (0, 0))
    assert ejected(cluster) == []  # 80% < 85%
    bucket(det, (10, 10), (0, 0), (0, 0))
    assert ejected(cluster) == [0]  # 18 of 20 over the window


# -- the window ----------------------------------------------------------------------------

def test_a_window_holds_the_last_buckets_and_their_sums():
    w = Window()
    for i in range(BUCKETS + 3):
        w.push(i + 1, i)
    assert len(w.buckets) == BUCKETS
    assert (w.requests, w.failures) == (sum(range(4, 14)), sum(range(3, 13)))
    w.clear()
    assert (w.requests, w.failures, len(w.buckets)) == (0, 0, 0)


@pytest.mark.parametrize("quiet,out", [(BUCKETS - 2, [0]), (BUCKETS - 1, [])])
def test_old_buckets_slide_out_of_the_window(loop, quiet, out):
    # Five failures in the first bucket, then quiet buckets, then five successes. While
    # the first bucket is in the window the host has 5 of 10 failed and is ejected;
    # once it slid out, 5 requests are below min_requests and it is not judged.
    det, cluster, _ = detector()
    bucket(det, (5, 5), (10, 0), (10, 0))
    for _ in range(quiet):
        bucket(det, (0, 0), (0, 0), (0, 0))
    assert ejected(cluster) == []
    bucket(det, (5, 0), (10, 0), (10, 0))
    assert ejected(cluster) == out


def test_the_rest_is_reckoned_over_the_same_window(loop):
    # The second bucket alone (50% against 0%) would eject host 0. Over the window the
    # rest failed 8 of 40 (20%), and its 7 of 20 (35%) is short of 2 x 20%. A third such
    # bucket makes it 12 of 30 (40%) against 8 of 60: ejected.
    det, cluster, _ = detector()
    bucket(det, (10, 2), (10, 4), (10, 4))
    bucket(det, (10, 5), (10, 0), (10, 0))
    assert ejected(cluster) == []
    bucket(det, (10, 5), (10, 0), (10, 0))
    assert ejected(cluster) == [0]


# -- ejection ------------------------------------------------------------------------------

def test_max_ejection_percent_ejects_the_worst_first(loop):
    det, cluster, _ = detector(4, max_ejection_percent=25)
    bucket(det, (10, 6), (10, 8), (10, 0), (10, 0))
    assert ejected(cluster) == [1]
    assert det.outliers() == [cluster.hosts[0]]  # still an outlier, but the cap holds


def test_both_outliers_go_when_max_ejection_percent_allows(loop):
    det, cluster, _ = detector(4, max_ejection_percent=50)
    bucket(det, (10, 6), (10, 8), (10, 0), (10, 0))
    assert ejected(cluster) == [0, 1]


def test_an_ejected_host_is_not_judged_again(loop):
    det, cluster, events = detector()
    bucket(det, (10, 5), (10, 0), (10, 0))
    assert ejected(cluster) == [0]
    # requests that were in flight when it was ejected fail meanwhile
    bucket(det, (10, 10), (10, 0), (10, 0))
    assert det.windows[cluster.hosts[0]].failures == 10
    assert len(events) == 1 and det.ejections == 1


def test_the_window_is_cleared_on_ejection_and_judged_afresh_on_return(loop):
    det, cluster, events = detector(base_ejection_time=5.0)
    h = cluster.hosts[0]
    bucket(det, (10, 5), (10, 0), (10, 0))
    assert h.ejected
    assert (det.windows[h].requests, det.windows[h].failures) == (0, 0)
    assert (h.bucket_requests, h.bucket_failures) == (0, 0)
    loop.run_until(5.0)  # the ejection time is up
    assert not h.ejected and det.returns == 1
    # Healthy now: its earlier failures are gone, so it is not ejected again.
    bucket(det, (10, 0), (10, 0), (10, 0))
    assert not h.ejected and det.ejections == 1
    # Failing again, it is judged on what it does now, and ejected for twice as long.
    bucket(det, (10, 5), (10, 0), (10, 0))
    assert h.ejected and h.times_ejected == 2
    assert [e[0] for e in events] == ["ejection", "return", "ejection"]


def test_a_host_that_left_the_cluster_is_forgotten(loop):
    det, cluster, _ = detector()
    bucket(det, (10, 0), (10, 0), (10, 0))
    gone = cluster.hosts.pop()
    det.tick()
    assert gone not in det.windows and len(det.windows) == 2


def test_consecutive_ejections_are_counted_by_reason_too(loop):
    det, cluster, _ = detector()
    det.config = OutlierDetection(consecutive_5xx=2, consecutive_gateway_failure=2,
                                  max_ejection_percent=100)
    det.observe(cluster.hosts[0], 500)
    det.observe(cluster.hosts[0], 500)
    det.observe(cluster.hosts[1], 502)
    det.observe(cluster.hosts[1], 200)
    det.observe(cluster.hosts[2], 503)
    det.observe(cluster.hosts[2], 504)
    assert ejected(cluster) == [0, 2]
    assert cluster.stats.outlier_by_reason == {"consecutive_5xx": 2}
    det.config = OutlierDetection(consecutive_5xx=0, consecutive_gateway_failure=2,
                                  max_ejection_percent=100)
    det.observe(cluster.hosts[1], 502)
    det.observe(cluster.hosts[1], 504)
    assert cluster.stats.outlier_by_reason == {"consecutive_5xx": 2,
                                               "consecutive_gateway_failure": 1}


# -- the timer -----------------------------------------------------------------------------

def test_the_timer_ticks_every_tenth_of_the_window(loop):
    det, cluster, _ = detector(window=10.0)
    serve(det, cluster.hosts[1], 3, 0)  # before the start: not counted
    det.start()
    assert [t[0] for t in loop.pending()] == [1.0]
    serve(det, cluster.hosts[0], 4, 1)
    loop.run_until(1.0)
    assert (det.windows[cluster.hosts[0]].requests, det.windows[cluster.hosts[1]].requests) == (
        4, 0)
    loop.run_until(25.0)
    assert len(det.windows[cluster.hosts[0]].buckets) == BUCKETS
    assert det.windows[cluster.hosts[0]].requests == 0  # slid out
    assert [t[0] for t in loop.pending()] == [26.0]


def test_a_late_tick_skips_ahead_instead_of_bursting(loop):
    det, _, _ = detector(window=10.0)
    det.start()
    (when, callback, args, _), = loop.pending()
    loop.timers.clear()
    loop.now = 7.5  # the loop was busy for six buckets
    callback(*args)
    assert [t[0] for t in loop.pending()] == [7.5]


def test_stop_cancels_the_timer_and_start_without_the_rule_does_nothing(loop):
    det, _, _ = detector()
    det.start()
    det.start()  # already running: still one timer
    assert len(loop.pending()) == 1 and det.running
    det.stop()
    assert loop.pending() == [] and not det.running
    det.config = OutlierDetection()
    det.start()
    assert loop.pending() == [] and not det.running


def test_reconfigure_keeps_the_windows_unless_the_rule_changed(loop):
    det, cluster, _ = detector()
    det.start()
    bucket(det, (5, 1), (0, 0), (0, 0))
    handle = loop.pending()[0][3]
    same_rule = OutlierDetection(consecutive_5xx=3, failure_rate=det.config.failure_rate)
    det.reconfigure(same_rule)
    assert loop.pending()[0][3] is handle and det.windows[cluster.hosts[0]].requests == 5
    det.reconfigure(OutlierDetection(failure_rate=FailureRate(window=2.0)))
    assert handle.cancelled and det.windows == {}
    assert [t[0] for t in loop.pending()] == [0.2]
    det.reconfigure(OutlierDetection())
    assert loop.pending() == [] and not det.running


# -- the cluster manager owns the timer ----------------------------------------------------

def in_loop(test):
    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))
    return run


def cluster_config(name: str = "c", *, rule: FailureRate | None = FailureRate(),
                   consecutive_5xx: int = 5) -> ClusterConfig:
    return ClusterConfig(name=name, endpoints=(Endpoint("127.0.0.1", 9001),
                                               Endpoint("127.0.0.1", 9002)),
                         outlier=OutlierDetection(consecutive_5xx=consecutive_5xx,
                                                  failure_rate=rule))


@in_loop
async def test_the_cluster_manager_starts_keeps_and_stops_the_detector():
    mgr = ClusterManager(Stats())
    mgr.update({"c": cluster_config()})
    det = mgr.get("c").outlier
    assert det.running
    handle = det._timer
    mgr.update({"c": cluster_config(consecutive_5xx=3)})  # a push that keeps the rule
    assert mgr.get("c").outlier is det and det._timer is handle and not handle.cancelled()
    assert det.cluster is mgr.get("c") and det.config.consecutive_5xx == 3
    mgr.update({"c": cluster_config(rule=None)})  # the rule goes, detection stays
    assert handle.cancelled() and not det.running
    mgr.update({"c": cluster_config()})
    assert det.running
    handle = det._timer
    mgr.update({})  # the cluster goes
    assert handle.cancelled() and not det.running


@in_loop
async def test_turning_outlier_detection_off_or_closing_stops_the_timer():
    mgr = ClusterManager(Stats())
    mgr.update({"c": cluster_config(), "d": cluster_config("d")})
    det_c, det_d = mgr.get("c").outlier, mgr.get("d").outlier
    mgr.update({"c": ClusterConfig(name="c", endpoints=()), "d": cluster_config("d")})
    assert mgr.get("c").outlier is None and not det_c.running and det_d.running
    mgr.close()
    assert not det_d.running
