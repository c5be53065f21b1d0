"""Load balancers: pick a host of a cluster for one request.

Each balancer is built once per cluster config from the list of hosts and keeps whatever
it needs precomputed (a weighted schedule, cumulative weights, a hash ring), so a pick is a
few arithmetic operations. Policies and their defaults follow Envoy's.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from hashlib import blake2b
from itertools import accumulate
from math import gcd
from functools import reduce

from plait.dataplane.config import LbPolicy

_MAX_SCHEDULE = 4096  # weighted round robin: schedule length cap


def _all_equal(weights: list[int]) -> bool:
    return len(set(weights)) <= 1


class RoundRobin:
    """Smooth weighted round robin (nginx's algorithm), unrolled into a schedule."""

    __slots__ = ("hosts", "schedule", "n", "i")

    def __init__(self, hosts: list) -> None:
        self.hosts = hosts
        weights = [h.endpoint.weight for h in hosts]
        if _all_equal(weights):
            self.schedule = list(hosts)
        else:
            g = reduce(gcd, weights)
            weights = [w // g for w in weights]
            total = sum(weights)
            if total > _MAX_SCHEDULE:
                scale = _MAX_SCHEDULE / total
                weights = [max(1, round(w * scale)) for w in weights]
                total = sum(weights)
            current = [0] * len(hosts)
            schedule = []
            for _ in range(total):
                for k, w in enumerate(weights):
                    current[k] += w
                best = max(range(len(hosts)), key=current.__getitem__)
                current[best] -= total
                schedule.append(hosts[best])
            self.schedule = schedule
        self.n = len(self.schedule)
        self.i = random.randrange(self.n) if self.n else 0  # spread workers' starting points

    def pick(self, key: bytes | None = None):
        n = self.n
        if not n:
            return None
        i = self.i = (self.i + 1) % n
        return self.schedule[i]


class Random:
    __slots__ = ("hosts", "cum", "total")

    def __init__(self, hosts: list) -> None:
        self.hosts = hosts
        self.cum = list(accumulate(h.endpoint.weight for h in hosts))
        self.total = self.cum[-1] if self.cum else 0

    def pick(self, key: bytes | None = None):
        if not self.total:
            return None
        return self.hosts[bisect_right(self.cum, random.random() * self.total)]


class LeastRequest:
    """Power of two choices on active requests (Envoy's default choice_count 2). With
    unequal weights, Envoy divides by weight; so do we."""

    __slots__ = ("hosts", "weighted")

    def __init__(self, hosts: list) -> None:
        self.hosts = hosts
        self.weighted = not _all_equal([h.endpoint.weight for h in hosts])

    def pick(self, key: bytes | None = None):
        hosts = self.hosts
        n = len(hosts)
        if n <= 1:
            return hosts[0] if n else None
        a = hosts[random.randrange(n)]
        b = hosts[random.randrange(n)]
        if self.weighted:
            return a if a.active / a.endpoint.weight <= b.active / b.endpoint.weight else b
        return a if a.active <= b.active else b


def _hash(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


class RingHash:
    """Consistent hashing (Ketama-style ring). Without a key, falls back to random."""

    __slots__ = ("hosts", "ring", "owners")

    def __init__(self, hosts: list, ring_size: int = 1024) -> None:
        self.hosts = hosts
        points = []
        total = sum(h.endpoint.weight for h in hosts) or 1
        for h in hosts:
            replicas = max(1, round(ring_size * h.endpoint.weight / total))
            key = h.endpoint.key.encode()
            for r in range(replicas):
                points.append((_hash(key + b"_%d" % r), h))
        points.sort(key=lambda p: p[0])
        self.ring = [p[0] for p in points]
        self.owners = [p[1] for p in points]

    def pick(self, key: bytes | None = None):
        if not self.ring:
            return None
        if key is None:
            return self.hosts[random.randrange(len(self.hosts))]
        i = bisect_right(self.ring, _hash(key))
        return self.owners[i if i < len(self.ring) else 0]


def build(policy: LbPolicy, hosts: list, *, ring_size: int = 1024):
    if policy is LbPolicy.ROUND_ROBIN:
        return RoundRobin(hosts)
    if policy is LbPolicy.LEAST_REQUEST:
        return LeastRequest(hosts)
    if policy is LbPolicy.RANDOM:
        return Random(hosts)
    return RingHash(hosts, ring_size)


# Envoy's overprovisioning factor: a priority keeps all its traffic until fewer than
# 1/1.4 (~71%) of its hosts are healthy; then the rest spills to the next priority.
OVERPROVISIONING = 1.4


class _Nobody:
    """The balancer of a cluster with no host to offer: every pick is None."""

    __slots__ = ()

    def pick(self, key: bytes | None = None):
        return None


_NOBODY = _Nobody()


class _ByPriority:
    """Spreads requests over priority levels by their share of the load."""

    __slots__ = ("balancers", "cum")

    def __init__(self, balancers: list, cum: list[float]) -> None:
        self.balancers = balancers
        self.cum = cum

    def pick(self, key: bytes | None = None):
        i = bisect_right(self.cum, random.random() * self.cum[-1])
        return self.balancers[min(i, len(self.balancers) - 1)].pick(key)


def build_for_health(policy: LbPolicy, hosts: list, *, ring_size: int = 1024,
                     panic_threshold: float = 50.0, on_panic=None):
    """A balancer that honours locality priorities and unhealthy hosts (ejected by outlier
    detection or failing active health checks), Envoy-style:
    each priority gets the load its healthy share can carry (x1.4 overprovisioning), the
    rest spills to the next; below `panic_threshold` percent of normalized health the
    cluster panics and balances over every host. With one priority and nobody ejected this
    is simply `build`."""
    priorities = sorted({h.endpoint.priority for h in hosts})
    if len(priorities) <= 1 and not any(h.ejected or h.hc_failed for h in hosts):
        return build(policy, hosts, ring_size=ring_size)
    groups = [[h for h in hosts if h.endpoint.priority == p] for p in priorities]
    healthy = [[h for h in g if not (h.ejected or h.hc_failed)] for g in groups]
    health = [min(1.0, OVERPROVISIONING * len(ok) / len(g)) for ok, g in zip(healthy, groups)]
    if min(1.0, sum(health)) * 100.0 < panic_threshold:
        if on_panic is not None:
            on_panic()
        return build(policy, hosts, ring_size=ring_size)
    loads, remaining = [], 1.0
    for h in health:
        share = min(h, remaining)
        loads.append(share)
        remaining -= share
    used = [(build(policy, ok, ring_size=ring_size), share)
            for ok, share in zip(healthy, loads) if share > 0 and ok]
    if not used:
        return _NOBODY  # nothing healthy and panic disabled (threshold 0)
    if len(used) == 1:
        return used[0][0]
    return _ByPriority([b for b, _ in used], list(accumulate(s for _, s in used)))
