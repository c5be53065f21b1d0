"""Active health checks: the threshold state machine, the owned task's rounds (never two
checks of one host at once), and the HTTP and TCP probes against real loopback servers."""

from __future__ import annotations

import asyncio

import pytest

from plait.dataplane.config import ClusterConfig, Endpoint, HealthCheck
from plait.dataplane.stats import ClusterStats
from plait.dataplane.upstream.cluster import Cluster
from plait.dataplane.upstream.connection import Host
from plait.dataplane.upstream.health_check import HealthChecker, http_probe, tcp_probe

CHECK = HealthCheck(interval=1.0, timeout=0.5, unhealthy_threshold=2, healthy_threshold=3,
                    http_path="/healthz")


def cluster(n: int = 2) -> Cluster:
    eps = tuple(Endpoint("127.0.0.1", 9000 + i) for i in range(n))
    return Cluster(ClusterConfig("c", eps, health_check=CHECK),
                   [Host(ep) for ep in eps], ClusterStats("c"))


def test_a_host_fails_at_the_unhealthy_threshold_and_returns_at_the_healthy_one():
    c = cluster()
    events = []
    hc = HealthChecker(CHECK, c, on_event=lambda *e: events.append(e))
    bad, good = c.hosts
    hc.observe(bad, False)
    assert not bad.hc_failed  # one failure is not yet two
    hc.observe(bad, True)
    hc.observe(bad, False)
    assert not bad.hc_failed  # a pass in between starts the count again
    hc.observe(bad, False)
    assert bad.hc_failed and events == [("hc_failed", "c", bad.key)]
    assert {c.lb.pick() for _ in range(10)} == {good}
    for _ in range(2):
        hc.observe(bad, True)
    hc.observe(bad, False)  # a failure while coming back restarts the passes
    for _ in range(2):
        hc.observe(bad, True)
    assert bad.hc_failed
    hc.observe(bad, True)
    assert not bad.hc_failed and events[-1] == ("hc_passed", "c", bad.key)
    assert {c.lb.pick() for _ in range(20)} == {bad, good}
    s = c.stats
    assert (s.hc_attempt, s.hc_success, s.hc_failure, s.hc_ejections, s.hc_returns) == (
        10, 6, 4, 1, 1)


def test_every_host_failing_means_panic_not_an_empty_cluster():
    c = cluster()
    hc = HealthChecker(CHECK, c)
    for h in c.hosts:
        hc.observe(h, False)
        hc.observe(h, False)
    assert all(h.hc_failed for h in c.hosts)
    assert c.lb.pick() is not None and c.stats.lb_panic >= 1


def test_rounds_never_overlap_checks_of_one_host():
    async def go():
        c = cluster(2)
        slow, fast = c.hosts
        release = asyncio.Event()
        started = []
        rounds = asyncio.Queue()

        async def probe(endpoint, cfg, name):
            started.append(endpoint.port)
            if endpoint.port == slow.endpoint.port:
                await release.wait()
            return True

        async def sleep(seconds):  # one round per item the test puts
            await rounds.get()

        async def settle():
            for _ in range(20):
                await asyncio.sleep(0)

        hc = HealthChecker(CHECK, c, probe=probe, sleep=sleep)
        hc.start()
        await settle()
        for _ in range(3):
            await rounds.put(None)
            await settle()
        # Four rounds: the fast host was checked in each, the slow one once (still busy).
        assert started.count(fast.endpoint.port) == 4
        assert started.count(slow.endpoint.port) == 1
        release.set()
        await settle()  # the slow check ends
        await rounds.put(None)
        await settle()
        assert started.count(slow.endpoint.port) == 2
        hc.stop()
        await asyncio.sleep(0)
        assert c.stats.hc_success == 7  # five rounds of the fast host, two of the slow

    asyncio.run(go())


@pytest.mark.parametrize("status,ok", [(200, True), (302, True), (404, False), (503, False)])
def test_http_probe_judges_the_status(status, ok):
    async def go():
        seen = []

        async def serve(reader, writer):
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                         b"HTTP/1.1 %d X\r\ncontent-length: 0\r\n\r\n" % status)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            result = await http_probe(Endpoint("127.0.0.1", port), CHECK, "svc")
        assert result is ok
        assert seen[0].startswith(b"GET /healthz HTTP/1.1\r\nhost: svc\r\n")

    asyncio.run(go())


def test_tcp_probe_connects_or_raises():
    async def go():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            assert await tcp_probe(Endpoint("127.0.0.1", port), CHECK, "svc") is True
        with pytest.raises(OSError):
            await tcp_probe(Endpoint("127.0.0.1", port), CHECK, "svc")

    asyncio.run(go())
