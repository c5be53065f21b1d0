"""The outlier rules' enforcing chances (Envoy's enforcing_* percentages): a host a rule
finds is ejected with the rule's chance, drawn from the detector's random source; at 100%
nothing is drawn; a spared host has spent the evidence it was found on; and every host
found with room to eject it is counted as detected, beside the ejections.

The draws come from a seeded `random.Random` or a scripted list, so every count here is
exact: no test depends on luck. (0% is compiled as the rule being off:
test_outlier_compile.)
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from plait.dataplane.config import FailureRate, OutlierDetection
from plait.dataplane.upstream import outlier
from plait.dataplane.upstream.outlier import BUCKETS, OutlierDetector
from plait.testing.outlier import FakeCluster


@pytest.fixture(autouse=True)
def loop(monkeypatch):
    """An ejection schedules the host's return; no test here waits for it."""
    fake = SimpleNamespace(time=lambda: 0.0, call_later=lambda *a: None)
    monkeypatch.setattr(outlier, "asyncio", SimpleNamespace(get_running_loop=lambda: fake))


def never() -> float:
    raise AssertionError("drew at 100%")


def scripted(*draws: float):
    """A random source answering `draws` in order."""
    it = iter(draws)
    return lambda: next(it)


def detector(n: int = 3, *, random=never, **config) -> tuple[OutlierDetector, FakeCluster]:
    config = {"max_ejection_percent": 100, **config}
    cluster = FakeCluster(n)
    return OutlierDetector(OutlierDetection(**config), cluster, random=random), cluster


def counts(cluster: FakeCluster) -> tuple[dict, dict]:
    """(detected, ejected) by reason."""
    return cluster.stats.outlier_detected_by_reason, cluster.stats.outlier_by_reason


RATE = FailureRate(min_requests=10, ratio=2.0, floor_percent=20, window=10.0, min_hosts=2)


def bucket(det: OutlierDetector, *counts: tuple[int, int]) -> None:
    """One bucket of (requests, failures) per host, in host order; then the tick."""
    for host, (requests, failures) in zip(det.cluster.hosts, counts):
        for i in range(requests):
            det.observe(host, 500 if i < failures else 200)
    det.tick()


# -- 100%: always, and nothing drawn ---------------------------------------------------------

def test_at_100_percent_every_rule_ejects_what_it_finds_without_a_draw():
    det, cluster = detector(consecutive_5xx=2, consecutive_gateway_failure=1,
                            failure_rate=RATE)
    for status in (500, 500):
        det.observe(cluster.hosts[0], status)
    det.observe(cluster.hosts[1], 503)
    assert [h.ejected for h in cluster.hosts] == [True, True, False]
    det, cluster = detector(consecutive_5xx=0, failure_rate=RATE)
    bucket(det, (10, 5), (10, 0), (10, 0))
    assert cluster.hosts[0].ejected
    assert counts(cluster) == ({"failure_rate": 1}, {"failure_rate": 1})


# -- a chance: a seeded draw per host found --------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_at_50_percent_a_host_found_is_ejected_when_its_draw_falls_under_half(seed):
    # 400 hosts, each found once by a single 5xx: exactly the draws under 0.5 are ejected,
    # in order, which for these seeds is about half.
    n = 400
    draws = random.Random(seed)
    wanted = [draws.random() < 0.5 for _ in range(n)]
    det, cluster = detector(n, consecutive_5xx=1, enforcing_consecutive_5xx=0.5,
                            random=random.Random(seed).random)
    for host in cluster.hosts:
        det.observe(host, 500)
    assert [h.ejected for h in cluster.hosts] == wanted
    assert 0.4 * n < sum(wanted) < 0.6 * n
    assert counts(cluster) == ({"consecutive_5xx": n}, {"consecutive_5xx": sum(wanted)})
    assert cluster.stats.outlier_ejections == det.ejections == sum(wanted)


def test_the_draw_is_against_the_rules_own_chance():
    det, cluster = detector(consecutive_5xx=0, consecutive_gateway_failure=1,
                            enforcing_consecutive_gateway_failure=0.25,
                            random=scripted(0.3, 0.2))
    det.observe(cluster.hosts[0], 502)  # 0.3: spared at 25%
    det.observe(cluster.hosts[1], 504)  # 0.2: ejected
    assert [h.ejected for h in cluster.hosts] == [False, True, False]
    assert counts(cluster) == ({"consecutive_gateway_failure": 2},
                               {"consecutive_gateway_failure": 1})


# -- spared: the evidence is spent -----------------------------------------------------------

def test_a_spared_host_needs_a_whole_new_run_of_failures():
    det, cluster = detector(consecutive_5xx=3, enforcing_consecutive_5xx=0.5,
                            random=scripted(0.9, 0.1))
    h = cluster.hosts[0]
    for _ in range(3):
        det.observe(h, 503)
    assert not h.ejected and (h.consecutive_5xx, h.consecutive_gateway) == (0, 0)
    det.observe(h, 500)
    det.observe(h, 500)
    assert not h.ejected and counts(cluster)[0] == {"consecutive_5xx": 1}
    det.observe(h, 500)  # three again: drawn again (0.1), ejected
    assert h.ejected
    assert counts(cluster) == ({"consecutive_5xx": 2}, {"consecutive_5xx": 1})


def test_a_spared_gateway_run_leaves_the_5xx_run_going():
    det, cluster = detector(consecutive_5xx=4, consecutive_gateway_failure=2,
                            enforcing_consecutive_gateway_failure=0.5,
                            random=scripted(0.9))
    h = cluster.hosts[0]
    det.observe(h, 502)
    det.observe(h, 503)  # the gateway rule finds it, and spares it
    assert (h.ejected, h.consecutive_5xx, h.consecutive_gateway) == (False, 2, 0)
    det.observe(h, 500)
    det.observe(h, 500)  # four 5xx in a row: the 5xx rule (at 100%) ejects
    assert h.ejected
    assert counts(cluster) == ({"consecutive_gateway_failure": 1, "consecutive_5xx": 1},
                               {"consecutive_5xx": 1})


def test_a_spared_host_is_judged_again_only_on_a_window_of_new_buckets():
    rule = FailureRate(min_requests=10, ratio=2.0, floor_percent=20, window=10.0,
                       min_hosts=2, enforcing=0.5)
    det, cluster = detector(consecutive_5xx=0, failure_rate=rule, random=scripted(0.9, 0.1))
    h = cluster.hosts[0]
    bucket(det, (10, 5), (10, 0), (10, 0))  # found, drawn 0.9: spared
    assert not h.ejected and counts(cluster)[0] == {"failure_rate": 1}
    assert det.outliers() == []  # still failing as much, but held
    for _ in range(BUCKETS - 1):
        bucket(det, (10, 5), (10, 0), (10, 0))
    assert not h.ejected and counts(cluster)[0] == {"failure_rate": 1}
    # the window now holds only buckets closed after the draw: judged, drawn 0.1, ejected
    bucket(det, (10, 5), (10, 0), (10, 0))
    assert h.ejected
    assert counts(cluster) == ({"failure_rate": 2}, {"failure_rate": 1})
    assert det.windows[h].held == 0


# -- no room: nothing decided, nothing drawn -------------------------------------------------

def test_a_host_found_while_max_ejection_percent_leaves_no_room_counts_only_as_overflow():
    det, cluster = detector(4, consecutive_5xx=1, enforcing_consecutive_5xx=0.5,
                            max_ejection_percent=25, random=scripted(0.1))
    det.observe(cluster.hosts[0], 500)  # drawn 0.1: ejected; 25% are out
    det.observe(cluster.hosts[1], 500)  # a second would be 50%: no room, no draw
    det.observe(cluster.hosts[1], 500)
    assert [h.ejected for h in cluster.hosts] == [True, False, False, False]
    assert counts(cluster) == ({"consecutive_5xx": 1}, {"consecutive_5xx": 1})
    assert cluster.stats.outlier_overflow == 2  # found twice without room
