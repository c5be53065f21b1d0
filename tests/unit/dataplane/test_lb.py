"""Load balancers: round robin (plain and weighted), random, least request, ring hash."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from plait.dataplane.config import Endpoint, LbPolicy
from plait.dataplane.upstream import lb
from plait.dataplane.upstream.connection import Host


def hosts(*weights: int) -> list[Host]:
    return [Host(Endpoint("10.0.0.%d" % (i + 1), 8080, weight=w)) for i, w in enumerate(weights)]


def within(count: int, n: int, p: float) -> bool:
    """`count` successes of `n` is within 4 standard deviations of a binomial(n, p)."""
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


@pytest.fixture(autouse=True)
def seeded():
    random.seed(20240611)


def test_round_robin_visits_each_host_once_per_cycle():
    hs = hosts(1, 1, 1)
    rr = lb.build(LbPolicy.ROUND_ROBIN, hs)
    picks = [rr.pick() for _ in range(30)]
    for i in range(0, 30, 3):
        assert sorted(h.key for h in picks[i:i + 3]) == sorted(h.key for h in hs)


def test_weighted_round_robin_schedule_is_exactly_proportional_and_smooth():
    hs = hosts(1, 2, 5)
    rr = lb.build(LbPolicy.ROUND_ROBIN, hs)
    picks = [rr.pick() for _ in range(8 * 50)]
    counts = Counter(h.key for h in picks)
    assert [counts[h.key] for h in hs] == [50, 100, 250]
    # Smooth (nginx): the heaviest host never gets more than 5 picks in a row out of 8.
    heavy = hs[2]
    run = longest = 0
    for h in picks:
        run = run + 1 if h is heavy else 0
        longest = max(longest, run)
    assert longest <= 3


def test_weighted_round_robin_with_huge_weights_keeps_the_proportion():
    hs = hosts(9000, 3000)  # schedule capped at 4096 entries, scaled
    rr = lb.build(LbPolicy.ROUND_ROBIN, hs)
    counts = Counter(rr.pick().key for _ in range(4000))
    assert abs(counts[hs[0].key] / 4000 - 0.75) < 0.01


def test_empty_clusters_pick_nothing():
    for policy in LbPolicy:
        assert lb.build(policy, []).pick(b"k") is None


def test_random_is_weighted():
    hs = hosts(1, 3, 6)
    r = lb.build(LbPolicy.RANDOM, hs)
    n = 20000
    counts = Counter(r.pick().key for _ in range(n))
    for h, p in zip(hs, (0.1, 0.3, 0.6)):
        assert within(counts[h.key], n, p), counts


def test_least_request_prefers_the_less_busy_host():
    idle, busy = hosts(1, 1)
    busy.active = 10
    balancer = lb.build(LbPolicy.LEAST_REQUEST, [idle, busy])
    n = 8000
    picked_busy = sum(balancer.pick() is busy for _ in range(n))
    # Two random choices: the busy host wins only when both choices are it (1/4).
    assert within(picked_busy, n, 0.25)


def test_least_request_with_equal_load_spreads_evenly():
    hs = hosts(1, 1, 1, 1)
    balancer = lb.build(LbPolicy.LEAST_REQUEST, hs)
    n = 8000
    counts = Counter(balancer.pick().key for _ in range(n))
    assert all(within(counts[h.key], n, 0.25) for h in hs), counts


def test_least_request_weighted_divides_active_by_weight():
    light, heavy = hosts(1, 4)
    light.active, heavy.active = 2, 4  # 2/1 > 4/4: the heavy host is the less loaded
    balancer = lb.build(LbPolicy.LEAST_REQUEST, [light, heavy])
    n = 8000
    assert within(sum(balancer.pick() is light for _ in range(n)), n, 0.25)


def test_ring_hash_is_stable_for_a_key():
    hs = hosts(1, 1, 1)
    ring = lb.build(LbPolicy.RING_HASH, hs)
    again = lb.build(LbPolicy.RING_HASH, hosts(1, 1, 1))
    for i in range(200):
        key = b"user-%d" % i
        first = ring.pick(key)
        assert all(ring.pick(key) is first for _ in range(3))
        assert again.pick(key).key == first.key  # same endpoints: same ring, any process


def test_ring_hash_spreads_keys():
    hs = hosts(1, 1, 1, 1)
    ring = lb.build(LbPolicy.RING_HASH, hs, ring_size=1024)
    n = 20000
    counts = Counter(ring.pick(b"k%d" % i).key for i in range(n))
    # 256 points per host: each share is 1/4 within a few percent; allow +-20% of it.
    for h in hs:
        assert 0.8 * n / 4 <= counts[h.key] <= 1.2 * n / 4, counts


def test_ring_hash_weights_the_share():
    hs = hosts(1, 3)
    ring = lb.build(LbPolicy.RING_HASH, hs, ring_size=2048)
    n = 20000
    heavy = sum(ring.pick(b"k%d" % i) is hs[1] for i in range(n))
    assert 0.65 <= heavy / n <= 0.85


def test_ring_hash_moves_few_keys_when_a_host_joins():
    four = lb.build(LbPolicy.RING_HASH, hosts(1, 1, 1, 1))
    five_hosts = hosts(1, 1, 1, 1, 1)
    five = lb.build(LbPolicy.RING_HASH, five_hosts)
    n = 5000
    moved = to_newcomer = 0
    for i in range(n):
        before, after = four.pick(b"k%d" % i).key, five.pick(b"k%d" % i).key
        if before != after:
            moved += 1
            to_newcomer += after == five_hosts[4].key
    # The newcomer takes about 1/5 of the keys. As in Envoy, each old host also has fewer
    # ring points now (205 instead of 256), so some keys move between old hosts; still far
    # from the 4/5 a modulo hash would move.
    assert within(to_newcomer, n, 0.2)
    assert moved / n <= 0.4
