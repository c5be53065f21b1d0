"""The retry budget's arithmetic over its sliding window, the outlier detector's ejections
and returns, and priority-aware balancing (spill-over and panic) over ejected hosts."""

from __future__ import annotations

import asyncio
import functools
import math
import random
from collections import Counter
from types import SimpleNamespace

import pytest

from plait.dataplane.config import Endpoint, LbPolicy, OutlierDetection, RetryBudget
from plait.dataplane.stats import ClusterStats
from plait.dataplane.upstream import lb, outlier
from plait.dataplane.upstream.connection import Host
from plait.dataplane.upstream.outlier import OutlierDetector
from plait.dataplane.upstream.retry_budget import RetryBudgetState


def within(count: int, n: int, p: float) -> bool:
    """`count` of `n` is within 4 standard deviations of a binomial(n, p)."""
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


@pytest.fixture(autouse=True)
def seeded():
    random.seed(7031)


# -- retry budget ----------------------------------------------------------------------------

def budget(ratio: float, floor: float, *, window: float = 10.0, bucket: float = 0.5):
    stats = SimpleNamespace(rq_retry_budget_exhausted=0)
    return RetryBudgetState(RetryBudget(ratio=ratio, min_per_second=floor, window=window),
                            bucket, stats), stats


def spend(state: RetryBudgetState, limit: int = 10_000) -> int:
    """How many retries the budget grants now, asking until it says no."""
    n = 0
    while n < limit and state.allow():
        n += 1
    return n


def test_the_floor_alone_allows_min_per_second_times_the_window():
    state, stats = budget(0.2, 1.0)
    assert spend(state) == 10
    assert (state.denied, stats.rq_retry_budget_exhausted) == (1, 1)
    assert not state.allow()
    assert (state.denied, stats.rq_retry_budget_exhausted) == (2, 2)


def test_the_ratio_is_a_share_of_the_requests_in_the_window():
    state, _ = budget(0.2, 0.0)
    state.requests += 100
    assert spend(state) == 20


def test_ratio_and_floor_add_up():
    state, _ = budget(0.2, 1.0)  # budget_percent 20, min_retry_concurrency 1
    state.requests += 50
    assert spend(state) == 20  # 0.2 x 50 + 1/s x 10 s


def test_linkerds_defaults():
    state, _ = budget(RetryBudget().ratio, RetryBudget().min_per_second)
    state.requests += 1000
    assert spend(state) == 300  # 20% of 1000 + 10/s x 10 s


@pytest.mark.parametrize("rotations,granted", [(0, 20), (1, 20), (19, 20), (20, 0), (25, 0)])
def test_requests_count_for_exactly_one_window(rotations, granted):
    # 0.5 s buckets over a 10 s window: a bucket is forgotten at its 20th rotation.
    state, _ = budget(0.2, 0.0)
    state.requests += 100
    for _ in range(rotations):
        state.rotate()
    assert spend(state) == granted


def test_retries_spent_count_against_the_window_until_they_leave_it():
    state, _ = budget(0.0, 1.0)
    assert spend(state) == 10
    for _ in range(19):
        state.rotate()
        assert not state.allow()
    state.rotate()  # the bucket that holds the 10 retries leaves the window
    assert spend(state) == 10


def test_buckets_slide_one_at_a_time():
    state, _ = budget(0.5, 0.0, window=2.0, bucket=0.5)  # four buckets
    for n in (10, 20, 30, 40):
        state.requests += n
        state.rotate()
    # Window: 20, 30, 40 closed + 0 current → 45 allowed.
    assert spend(state) == 45
    state.rotate()  # 30, 40, 0 closed; the 45 retries were in the bucket that just closed
    assert spend(state) == 0  # 0.5 x 70 = 35 < 45 spent


def in_loop(test):
    """Run an async test on a fresh asyncio loop (the detector's timers need a running one)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))
    return run


# -- outlier detection -----------------------------------------------------------------------

class FakeCluster:
    """What the detector needs of a cluster: hosts, stats, a name and rebuild_lb()."""

    def __init__(self, n: int) -> None:
        self.name = "c"
        self.hosts = [Host(Endpoint("127.0.0.1", 9000 + i)) for i in range(n)]
        self.stats = ClusterStats(self.name)
        self.rebuilds = 0

    def rebuild_lb(self) -> None:
        self.rebuilds += 1


def detector(n: int = 3, **config) -> tuple[OutlierDetector, FakeCluster, list]:
    cluster = FakeCluster(n)
    events: list = []
    det = OutlierDetector(OutlierDetection(**config), cluster,
                          on_event=lambda *e: events.append(e))
    return det, cluster, events


@in_loop
async def test_consecutive_5xx_ejects_and_a_success_resets_the_count():
    det, cluster, events = detector(consecutive_5xx=3)
    h = cluster.hosts[0]
    for status in (500, 503, 200, 500, 502, 404, 500, 500):
        det.observe(h, status)
    assert not h.ejected  # never three 5xx in a row
    det.observe(h, 500)
    assert h.ejected and h.times_ejected == 1
    assert (det.ejections, cluster.stats.outlier_ejections, cluster.rebuilds) == (1, 1, 1)
    assert events == [("ejection", "c", h.key)]
    assert not any(o.ejected for o in cluster.hosts[1:])


@in_loop
async def test_no_response_counts_as_a_5xx():
    det, cluster, _ = detector(consecutive_5xx=2)
    h = cluster.hosts[1]
    det.observe(h, 0)
    det.observe(h, 0)
    assert h.ejected


@in_loop
async def test_consecutive_gateway_failures_only_count_502_503_504():
    det, cluster, _ = detector(consecutive_5xx=0, consecutive_gateway_failure=2)
    h = cluster.hosts[0]
    for status in (502, 500, 503, 500, 500, 500, 504):
        det.observe(h, status)
    assert not h.ejected  # a 500 breaks a run of gateway failures; 5xx alone is off
    det.observe(h, 0)  # a connect failure is a gateway failure (503)
    assert h.ejected


@in_loop
async def test_a_success_breaks_a_run_of_gateway_failures_too():
    det, cluster, _ = detector(consecutive_5xx=0, consecutive_gateway_failure=3)
    h = cluster.hosts[0]
    for status in (502, 504, 200, 503, 502):
        det.observe(h, status)
    assert not h.ejected
    det.observe(h, 504)
    assert h.ejected


def test_tries_are_counted_only_for_the_failure_rate_rule():
    # Without the rule nothing reads the host's bucket counters: a try leaves them be.
    det, cluster, _ = detector(consecutive_5xx=3)
    h = cluster.hosts[0]
    for status in (200, 500, 0, 404):
        det.observe(h, status)
    assert (h.bucket_requests, h.bucket_failures) == (0, 0)


@in_loop
async def test_an_ejected_host_is_not_ejected_again():
    det, cluster, events = detector(consecutive_5xx=1, max_ejection_percent=100)
    h = cluster.hosts[0]
    for _ in range(5):
        det.observe(h, 500)
    assert (det.ejections, h.times_ejected, len(events)) == (1, 1, 1)


@pytest.mark.parametrize("n,percent,ejectable", [
    (4, 50, 2), (4, 10, 1), (3, 50, 1), (3, 67, 2), (10, 30, 3), (2, 100, 2),
])
@in_loop
async def test_at_most_max_ejection_percent_are_out_but_always_one(n, percent, ejectable):
    det, cluster, _ = detector(n, consecutive_5xx=1, max_ejection_percent=percent)
    for h in cluster.hosts:
        det.observe(h, 500)
    assert sum(h.ejected for h in cluster.hosts) == ejectable
    assert det.ejections == ejectable


async def wait_for(predicate, *, deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not predicate():
        assert loop.time() < end, "condition not met before the deadline"
        await asyncio.sleep(0.005)


@in_loop
async def test_an_ejected_host_returns_after_base_ejection_time():
    det, cluster, events = detector(consecutive_5xx=1, base_ejection_time=0.05)
    h = cluster.hosts[2]
    det.observe(h, 500)
    assert h.ejected
    await wait_for(lambda: not h.ejected)
    assert (det.returns, cluster.stats.outlier_returns, cluster.rebuilds) == (1, 1, 2)
    assert events == [("ejection", "c", h.key), ("return", "c", h.key)]
    # Back in rotation with a clean slate: it takes the full run of failures again.
    det.observe(h, 500)
    await wait_for(lambda: det.returns == 2)
    assert det.ejections == 2


class FakeLoop:
    """A loop whose timers are held for the test to fire, with a settable clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay, callback, *args):
        self.timers.append((delay, callback, args))


@pytest.fixture
def fake_loop(monkeypatch):
    loop = FakeLoop()
    monkeypatch.setattr(outlier, "asyncio", SimpleNamespace(get_running_loop=lambda: loop))
    return loop


def fire(loop: FakeLoop) -> float:
    """Run the one pending timer; return the delay it was set for."""
    (delay, callback, args), = loop.timers
    loop.timers.clear()
    loop.now += delay
    callback(*args)
    return delay


def test_ejection_time_grows_with_each_ejection_up_to_the_maximum(fake_loop):
    det, cluster, _ = detector(consecutive_5xx=1, base_ejection_time=10,
                               max_ejection_time=35)
    h = cluster.hosts[0]
    durations = []
    for _ in range(5):
        det.observe(h, 500)  # fails again the moment it returns
        durations.append(fire(fake_loop))
    assert durations == [10, 20, 30, 35, 35]


def test_a_base_time_above_the_maximum_is_used_as_is(fake_loop):
    det, cluster, _ = detector(consecutive_5xx=1, base_ejection_time=60, max_ejection_time=30)
    det.observe(cluster.hosts[0], 500)
    assert fire(fake_loop) == 60


def test_ejection_multiplier_decays_while_the_host_stays_healthy(fake_loop):
    # Envoy: each interval a returned host goes without ejection takes one off its
    # ejection count, so an old burst of failures does not lengthen a new ejection forever.
    det, cluster, _ = detector(consecutive_5xx=1, base_ejection_time=10,
                               max_ejection_time=300, interval=10)
    h = cluster.hosts[0]
    for _ in range(3):
        det.observe(h, 500)
        fire(fake_loop)  # ejected 10, 20, 30 s
    fake_loop.now += 25  # two whole intervals without failures
    det.observe(h, 500)
    assert fire(fake_loop) == 20  # count 3 - 2 + 1 = 2
    fake_loop.now += 1000
    det.observe(h, 500)
    assert fire(fake_loop) == 10  # fully decayed


# -- priorities, spill-over and panic --------------------------------------------------------

def hosts_by_priority(*levels: tuple[int, int]) -> list[Host]:
    """levels: (hosts, of which ejected) per priority."""
    out = []
    for priority, (n, ejected) in enumerate(levels):
        for i in range(n):
            h = Host(Endpoint(f"10.{priority}.0.{i + 1}", 80, priority=priority))
            h.ejected = i < ejected
            out.append(h)
    return out


def picks(balancer, n: int) -> Counter:
    return Counter(balancer.pick() for _ in range(n))


def by_priority(counts: Counter) -> Counter:
    out: Counter = Counter()
    for h, c in counts.items():
        out[h.endpoint.priority] += c
    return out


def test_one_priority_and_no_ejection_is_the_plain_balancer():
    hs = hosts_by_priority((3, 0))
    assert isinstance(lb.build_for_health(LbPolicy.ROUND_ROBIN, hs), lb.RoundRobin)


@pytest.mark.parametrize("policy", list(LbPolicy))
def test_healthy_priority_zero_takes_everything(policy):
    hs = hosts_by_priority((2, 0), (2, 0))
    counts = picks(lb.build_for_health(policy, hs), 400)
    assert by_priority(counts) == {0: 400}


@pytest.mark.parametrize("policy", list(LbPolicy))
def test_ejected_hosts_get_nothing_while_the_priority_can_carry_the_load(policy):
    hs = hosts_by_priority((4, 1), (2, 0))  # 3/4 healthy x 1.4 = 105%: no spill
    counts = picks(lb.build_for_health(policy, hs), 800)
    assert by_priority(counts) == {0: 800}
    assert not any(h.ejected for h in counts)


def test_load_spills_to_the_next_priority_by_the_missing_health():
    hs = hosts_by_priority((4, 2), (2, 0))  # 2/4 x 1.4 = 70% stays, 30% spills
    n = 4000
    counts = picks(lb.build_for_health(LbPolicy.ROUND_ROBIN, hs), n)
    assert within(by_priority(counts)[1], n, 0.3), counts
    assert not any(h.ejected for h in counts)


def test_spill_over_three_priorities():
    hs = hosts_by_priority((4, 3), (4, 3), (2, 0))  # 35%, 35%, the rest 30%
    n = 6000
    got = by_priority(picks(lb.build_for_health(LbPolicy.RANDOM, hs), n))
    for priority, p in ((0, 0.35), (1, 0.35), (2, 0.30)):
        assert within(got[priority], n, p), got


def test_a_wholly_ejected_priority_sends_everything_to_the_next():
    panics = []
    hs = hosts_by_priority((1, 1), (1, 0))
    balancer = lb.build_for_health(LbPolicy.ROUND_ROBIN, hs, on_panic=lambda: panics.append(1))
    assert by_priority(picks(balancer, 100)) == {1: 100} and not panics


def test_less_than_full_total_health_is_normalized_over_what_is_healthy():
    # 1/2 x 1.4 = 70% in priority 0, nothing healthy in priority 1: 70% >= the 50% panic
    # threshold, so all traffic goes to the healthy host of priority 0.
    hs = hosts_by_priority((2, 1), (2, 2))
    counts = picks(lb.build_for_health(LbPolicy.ROUND_ROBIN, hs), 200)
    assert len(counts) == 1 and not next(iter(counts)).ejected


def test_panic_below_the_threshold_balances_over_every_host():
    panics = []
    hs = hosts_by_priority((4, 3))  # 1/4 x 1.4 = 35% < 50%
    n = 4000
    counts = picks(lb.build_for_health(LbPolicy.RANDOM, hs, on_panic=lambda: panics.append(1)),
                   n)
    assert panics == [1]
    assert len(counts) == 4 and all(within(c, n, 0.25) for c in counts.values()), counts


def test_panic_threshold_is_configurable_and_zero_disables_it():
    hs = hosts_by_priority((4, 3))
    panics = []
    off = lb.build_for_health(LbPolicy.ROUND_ROBIN, hs, panic_threshold=0,
                              on_panic=lambda: panics.append(1))
    assert len(picks(off, 100)) == 1 and not panics
    lb.build_for_health(LbPolicy.ROUND_ROBIN, hs, panic_threshold=30,
                        on_panic=lambda: panics.append(1))
    assert not panics  # 35% is above 30%
    lb.build_for_health(LbPolicy.ROUND_ROBIN, hosts_by_priority((4, 2)), panic_threshold=75,
                        on_panic=lambda: panics.append(1))
    assert panics == [1]  # 70% is below 75%


def test_ring_hash_keeps_keys_on_their_priority_and_hosts():
    hs = hosts_by_priority((4, 2), (2, 0))
    balancer = lb.build_for_health(LbPolicy.RING_HASH, hs)
    keys = [b"user-%d" % i for i in range(200)]
    first = {k: balancer.pick(k) for k in keys}
    assert not any(h.ejected for h in first.values())
    # The priority is chosen per request, so a key sticks to one host per priority.
    for k in keys[:50]:
        hosts = {balancer.pick(k) for _ in range(40)}
        assert len({h.endpoint.priority for h in hosts}) == len(hosts) <= 2
