"""Connection-pool circuit breaking: slot accounting, the pending queue, hand-over of a
released connection, and what the cluster manager carries across config pushes."""

from __future__ import annotations

import asyncio

from plait.dataplane.config import ClusterConfig, Endpoint, HealthCheck, PoolLimits
from plait.dataplane.stats import ClusterStats, Stats
from plait.dataplane.upstream.cluster import Cluster, ClusterManager
from plait.dataplane.upstream.connection import Host, UpstreamConnection
from plait.dataplane.upstream.pool_limits import OVERFLOW, ConnectionLimiter

A, B = Endpoint("127.0.0.1", 9001), Endpoint("127.0.0.1", 9002)


class FakeCluster:
    def __init__(self) -> None:
        self.connects = []

    def connect(self, host, on_done, *, alive=None):
        self.connects.append(host)


def limiter(**limits) -> tuple[ConnectionLimiter, FakeCluster, ClusterStats]:
    stats = ClusterStats("c")
    fake = FakeCluster()
    return ConnectionLimiter(PoolLimits(**limits), stats, fake), fake, stats


def test_slots_then_a_bounded_queue():
    pool, _, stats = limiter(max_connections=2, max_pending_requests=2)
    assert pool.try_open() and pool.try_open() and not pool.try_open()
    host = Host(A)
    assert pool.wait(host, None, lambda: True)
    assert pool.wait(host, None, lambda: True)
    assert not pool.wait(host, None, lambda: True)
    assert stats.rq_pending_active == 2


def test_a_closed_connection_wakes_the_first_waiter_still_waiting():
    pool, fake, stats = limiter(max_connections=1, max_pending_requests=3)
    a, b = Host(A), Host(B)
    assert pool.try_open()
    gone = [False]
    pool.wait(a, None, lambda: not gone[0])
    pool.wait(b, None, lambda: True)
    gone[0] = True  # the first request timed out meanwhile
    pool.on_closed()
    assert fake.connects == [b] and stats.rq_pending_active == 0
    assert pool.connections == 0  # the woken request's connect takes the slot itself


def test_dead_waiters_do_not_fill_the_queue():
    pool, _, stats = limiter(max_connections=0, max_pending_requests=1)
    alive = [True]
    assert pool.wait(Host(A), None, lambda: alive[0])
    alive[0] = False
    assert pool.wait(Host(A), None, lambda: True)
    assert len(pool.pending) == 1 and stats.rq_pending_active == 1


class FakeConn:
    def __init__(self) -> None:
        self.closed = False
        self.reusable = True
        self.requests = 1
        self.exchange = None
        self.received = False
        self.out = []  # nothing left unwritten

    def close(self) -> None:
        self.closed = True


def test_a_released_connection_goes_to_a_waiter_for_its_host_or_is_closed():
    pool, _, _ = limiter(max_connections=1, max_pending_requests=4)
    a, b = Host(A), Host(B)
    a.pool = b.pool = pool
    got = []
    pool.wait(b, lambda conn, exc: got.append(("b", conn)), lambda: True)
    pool.wait(a, lambda conn, exc: got.append(("a", conn)), lambda: True)
    conn = FakeConn()
    a.release(conn)  # the waiter for a gets it, ahead of the older waiter for b
    assert got == [("a", conn)] and not a.idle
    other = FakeConn()
    a.release(other)  # nobody waits for a: closed, so that its slot serves b
    assert other.closed and not a.idle and got == [("a", conn)]


def test_cluster_connect_at_the_limit_waits_or_overflows():
    cfg = ClusterConfig("c", (A,), limits=PoolLimits(max_connections=0, max_pending_requests=1))
    c = Cluster(cfg, [Host(A)], ClusterStats("c"))
    results = []
    c.connect(c.hosts[0], lambda conn, exc: results.append(exc), alive=lambda: True)
    c.connect(c.hosts[0], lambda conn, exc: results.append(exc), alive=lambda: True)
    c.connect(c.hosts[0], lambda conn, exc: results.append(exc))  # a mirror: never waits
    assert results == [OVERFLOW, OVERFLOW]
    assert (c.stats.cx_overflow, c.stats.rq_pending_overflow) == (3, 2)


def test_a_connection_frees_its_slot_once():
    pool, _, _ = limiter(max_connections=1)
    assert pool.try_open()
    conn = UpstreamConnection(Host(A), pool)
    conn.connection_made(None)
    conn.connection_lost(None)
    conn.connection_lost(None)
    assert pool.connections == 0


def test_pushes_keep_the_limiter_and_the_health_checker_while_unchanged():
    check = HealthCheck(interval=60, timeout=1, unhealthy_threshold=1, healthy_threshold=1)

    async def go():
        mgr = ClusterManager(Stats())
        mgr.update({"c": ClusterConfig("c", (A,), health_check=check)})
        first = mgr.get("c")
        first.hosts[0].hc_failed = True
        mgr.update({"c": ClusterConfig("c", (A, B), health_check=check,
                                       limits=PoolLimits(max_connections=7))})
        second = mgr.get("c")
        assert second.pool is first.pool and second.pool.limits.max_connections == 7
        assert second.pool.cluster is second
        assert all(h.pool is second.pool for h in second.hosts)
        assert second.health is first.health and second.health.cluster is second
        assert second.max_requests == 1024
        task = second.health.task
        mgr.update({"c": ClusterConfig("c", (A, B))})  # health checking turned off
        third = mgr.get("c")
        assert third.health is None and not any(h.hc_failed for h in third.hosts)
        await asyncio.sleep(0)
        assert task.cancelled() or task.done()
        mgr.close()

    asyncio.run(go())
