"""Clusters: the hosts of each upstream service, their balancer, and connection set-up.

The manager is rebuilt from each config snapshot, but hosts (and so their pools of live
connections and counters) carry over when the same endpoint stays in a cluster, so a
config push does not drop keep-alive connections.
"""

from __future__ import annotations

import asyncio

from plait.dataplane.config import ClusterConfig
from plait.dataplane.net import upstream_tls
from plait.dataplane.stats import ClusterStats, Stats
from plait.dataplane.upstream import lb
from plait.dataplane.upstream.connection import Host, UpstreamConnection
from plait.dataplane.upstream.health_check import HealthChecker
from plait.dataplane.upstream.outlier import OutlierDetector
from plait.dataplane.upstream.pool_limits import OVERFLOW, ConnectionLimiter
from plait.dataplane.upstream.retry_budget import RetryBudgetState

# Seconds between a worker's sweeps: the granularity of the header deadline, idle timeouts
# and the retry budget's window.
SWEEP_INTERVAL = 0.5


class Cluster:
    __slots__ = ("config", "name", "hosts", "lb", "stats", "connect_timeout", "budget",
                 "outlier", "pool", "max_requests", "health", "tls")

    def __init__(self, config: ClusterConfig, hosts: list[Host], stats: ClusterStats, *,
                 on_event=None) -> None:
        self.config = config
        self.name = config.name
        self.hosts = hosts
        self.stats = stats
        self.connect_timeout = config.connect_timeout
        self.budget = RetryBudgetState(config.retry_budget, SWEEP_INTERVAL, stats)
        self.outlier = (OutlierDetector(config.outlier, self, on_event=on_event)
                        if config.outlier is not None else None)
        self.pool = ConnectionLimiter(config.limits, stats, self)
        self.max_requests = config.limits.max_requests
        self.health: HealthChecker | None = None
        self.tls = None  # the worker's TlsStore, for endpoints with TLS
        self.rebuild_lb()

    def rebuild_lb(self) -> None:
        """Rebuild the balancer from the hosts' priorities and health (after an ejection
        or a return; rare, so the pick itself stays a few operations)."""
        self.lb = lb.build_for_health(
            self.config.lb_policy, self.hosts, ring_size=self.config.ring_size,
            panic_threshold=self.config.healthy_panic_threshold, on_panic=self._panic)

    def _panic(self) -> None:
        self.stats.lb_panic += 1

    def connect(self, host: Host, on_done, *, alive=None) -> None:
        """Open a connection to `host`; later call `on_done(conn, None)` or
        `on_done(None, exc)` (asyncio.TimeoutError when connect_timeout passed).

        At max_connections the request waits for a slot while `alive()` says it still
        wants one (without `alive` it does not wait); when the pending queue is full too,
        `on_done(None, pool_limits.OVERFLOW)` is called at once."""
        pool = self.pool
        if not pool.try_open():
            self.stats.cx_overflow += 1
            if alive is None or not pool.wait(host, on_done, alive):
                self.stats.rq_pending_overflow += 1
                on_done(None, OVERFLOW)
            return
        loop = asyncio.get_running_loop()
        ep = host.endpoint
        self.stats.cx_total += 1
        proto = UpstreamConnection(host, pool)
        if ep.tls is None:
            opening = loop.create_connection(lambda: proto, ep.host, ep.port)
        else:
            opening = upstream_tls.connect(loop, lambda: proto, ep, self.tls)
        task = loop.create_task(opening)
        timer = loop.call_later(self.connect_timeout, task.cancel)

        def done(t: asyncio.Task) -> None:
            timer.cancel()
            if (t.cancelled() or t.exception() is not None) and proto.transport is None:
                proto.pool = None  # never connected: no connection_lost will free the slot
                pool.on_closed()
            if t.cancelled():
                self.stats.cx_connect_timeout += 1
                self.stats.cx_connect_fail += 1
                on_done(None, asyncio.TimeoutError("connect timeout"))
                return
            exc = t.exception()
            if exc is not None:
                self.stats.cx_connect_fail += 1
                on_done(None, exc)
                return
            on_done(t.result()[1], None)

        task.add_done_callback(done)


class ClusterManager:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.clusters: dict[str, Cluster] = {}
        self.on_event = None  # (kind, cluster, host) -> None: governance events
        self.tls = None  # TlsStore: client certificates for endpoints with TLS

    def get(self, name: str) -> Cluster | None:
        return self.clusters.get(name)

    def update(self, configs: dict[str, ClusterConfig]) -> None:
        """Install new cluster configs; keep hosts whose endpoint is unchanged."""
        old_hosts = {(c.name, h.key): h for c in self.clusters.values() for h in c.hosts}
        clusters = {}
        for name, cfg in configs.items():
            hosts = []
            for ep in cfg.endpoints:
                h = old_hosts.pop((name, ep.key), None)
                if h is None or h.endpoint != ep:
                    if h is not None:
                        h.close_all()
                    h = Host(ep, max_requests=cfg.max_requests_per_connection)
                else:
                    h.max_requests = cfg.max_requests_per_connection
                hosts.append(h)
            cluster = Cluster(cfg, hosts, self.stats.cluster(name), on_event=self.on_event)
            cluster.tls = self.tls
            old = self.clusters.get(name)
            self._outlier(cluster, old)
            if old is not None:  # live connection counts and waiters carry over
                cluster.pool = old.pool
                cluster.pool.limits = cfg.limits
                cluster.pool.cluster = cluster
            for h in hosts:
                h.pool = cluster.pool
            self._health(cluster, old)
            clusters[name] = cluster
        for name, old in self.clusters.items():
            if name not in clusters:
                if old.health is not None:
                    old.health.stop()
                if old.outlier is not None:
                    old.outlier.stop()
        for h in old_hosts.values():
            h.close_all()  # busy connections finish their exchange, then close on release
        self.clusters = clusters

    @staticmethod
    def _outlier(cluster: Cluster, old: Cluster | None) -> None:
        """Keep the detector (its pending returns, its failure-rate windows and timer)
        across a push and point it at the new cluster; start or stop it otherwise."""
        previous = old.outlier if old is not None else None
        if cluster.outlier is not None and previous is not None:
            cluster.outlier = previous
            previous.cluster = cluster
            previous.reconfigure(cluster.config.outlier)
            return
        if previous is not None:
            previous.stop()
        if cluster.outlier is not None:
            cluster.outlier.start()
        elif any(h.ejected for h in cluster.hosts):
            # outlier detection was turned off: nobody stays ejected by it
            for h in cluster.hosts:
                h.ejected = False
            cluster.rebuild_lb()

    def _health(self, cluster: Cluster, old: Cluster | None) -> None:
        """Keep the health checker (and its rhythm) while its config is unchanged; start,
        restart or stop it otherwise. Hosts keep their health state either way."""
        cfg = cluster.config.health_check
        checker = old.health if old is not None else None
        if checker is not None and checker.config != cfg:
            checker.stop()
            checker = None
        if cfg is None:
            if any(h.hc_failed for h in cluster.hosts):
                for h in cluster.hosts:
                    h.hc_failed = False
                cluster.rebuild_lb()
            return
        if checker is None:
            checker = HealthChecker(cfg, cluster, on_event=self.on_event)
            checker.start()
        checker.cluster = cluster
        cluster.health = checker

    def sweep(self, now: float) -> None:
        """Close pooled connections idle for longer than their cluster's idle timeout."""
        for c in self.clusters.values():
            c.budget.rotate()
            c.pool.sweep()
            timeout = c.config.idle_timeout
            for h in c.hosts:
                if h.idle:
                    h.close_idle(now, timeout)

    def host_series(self) -> list:
        return [(c.name, h.key, h.rq_total, h.cx_active)
                for c in self.clusters.values() for h in c.hosts]

    def close(self) -> None:
        for c in self.clusters.values():
            if c.health is not None:
                c.health.stop()
            if c.outlier is not None:
                c.outlier.stop()
            for h in c.hosts:
                h.close_all()
