"""Active health checks: the threshold state machine, the owned task's rounds (never two
checks of one host at once), and the HTTP and TCP probes against real loopback servers,
plaintext and mTLS (a STRICT endpoint is checked over TLS with the cluster's context)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from plait.controlplane.ca import Authority
from plait.dataplane.config import ClusterConfig, Endpoint, HeaderMatch, HealthCheck
from plait.dataplane.net.tls_config import PeerTls, TlsFiles
from plait.dataplane.net.tls_store import TlsStore, peer_identity
from plait.dataplane.net.upstream_tls import UpstreamTlsError
from plait.dataplane.stats import ClusterStats
from plait.dataplane.upstream.cluster import Cluster
from plait.dataplane.upstream.connection import Host
from plait.dataplane.upstream.health_check import HealthChecker, http_probe, tcp_probe
from plait.security.tls import server_context
from plait.testing import mtls

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

        async def probe(endpoint, cfg, name, tls):
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


# -- TLS ------------------------------------------------------------------------------------

A_ID = "spiffe://cluster.local/ns/shop/sa/a"
B_ID = "spiffe://cluster.local/ns/shop/sa/b"


@pytest.fixture(scope="module")
def ids(tmp_path_factory):
    root = tmp_path_factory.mktemp("ids")
    ca = Authority.open(root / "ca", trust_domain="cluster.local")
    return {"a": mtls.issue_identity(ca, root / "a", namespace="shop", account="a"),
            "b": mtls.issue_identity(ca, root / "b", namespace="shop", account="b")}


def peer(identity, *, expect: str = B_ID) -> PeerTls:
    """The compiled TLS of an endpoint, as the caller `identity` speaks to it."""
    files = TlsFiles(str(identity.cert_chain), str(identity.key), str(identity.bundle))
    return PeerTls(files, (HeaderMatch(name=b"", exact=expect.encode()),))


async def strict_server(ids, seen: list):
    """A TLS-only server as `b` (client certificate required) answering 200; `seen`
    gets the client's SPIFFE ID for every request."""
    context = server_context(cert_chain=ids["b"].cert_chain, key=ids["b"].key,
                             bundle=ids["b"].bundle)

    async def serve(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            seen.append(peer_identity(writer.get_extra_info("ssl_object")))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # a plaintext or refused client
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


async def fails(probe) -> bool:
    """Whether a probe fails the way the checker counts it: False, or any exception."""
    try:
        return not await probe
    except Exception:
        return True


def test_an_http_check_of_a_tls_endpoint_uses_the_clusters_tls(ids):
    async def go():
        seen = []
        server, port = await strict_server(ids, seen)
        async with server:
            store = TlsStore()
            tls_endpoint = Endpoint("127.0.0.1", port, tls=peer(ids["a"]))
            assert await http_probe(tls_endpoint, CHECK, "svc", store) is True
            assert seen == [A_ID]  # the caller's certificate was presented
            # a server that is not the one the cluster expects fails the check
            wrong = Endpoint("127.0.0.1", port, tls=peer(ids["a"], expect=A_ID))
            with pytest.raises(UpstreamTlsError, match="is not accepted"):
                await http_probe(wrong, CHECK, "svc", store)
            # no TLS material: fail closed, never plaintext instead
            with pytest.raises(UpstreamTlsError, match="no workload certificate"):
                await http_probe(tls_endpoint, CHECK, "svc", None)
            # what the probe did before it knew TLS: plaintext to a TLS-only port fails
            plain = http_probe(Endpoint("127.0.0.1", port), CHECK, "svc", store)
            assert await fails(asyncio.wait_for(plain, 2))
            # a TCP check stays a plain connect
            assert await tcp_probe(tls_endpoint, CHECK, "svc", store) is True
        assert seen == [A_ID]

    asyncio.run(go())


def test_the_checker_hands_its_cluster_tls_to_the_probe(ids):
    async def go():
        seen = []
        server, port = await strict_server(ids, seen)
        async with server:
            ep = Endpoint("127.0.0.1", port, tls=peer(ids["a"]))
            c = Cluster(ClusterConfig("c", (ep,), health_check=CHECK), [Host(ep)],
                        ClusterStats("c"))
            c.tls = TlsStore()  # what the cluster manager sets from the worker
            hc = HealthChecker(CHECK, c)
            hc.start()
            deadline = asyncio.get_running_loop().time() + 5
            while c.stats.hc_attempt == 0 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            hc.stop()
        assert (c.stats.hc_attempt, c.stats.hc_success, c.stats.hc_failure) == (1, 1, 0)
        assert seen == [A_ID]

    asyncio.run(go())
