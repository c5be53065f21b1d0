"""Clusters: the hosts of each upstream service, their balancer, and connection set-up.

The manager is rebuilt from each config snapshot, but hosts (and so their pools of live
connections and counters) carry over when the same endpoint stays in a cluster, so a
config push does not drop keep-alive connections.
"""

from __future__ import annotations

import asyncio

from plait.dataplane.config import ClusterConfig
from plait.dataplane.stats import ClusterStats, Stats
from plait.dataplane.upstream import lb
from plait.dataplane.upstream.connection import Host, UpstreamConnection


class Cluster:
    __slots__ = ("config", "name", "hosts", "lb", "stats", "connect_timeout")

    def __init__(self, config: ClusterConfig, hosts: list[Host], stats: ClusterStats) -> None:
        self.config = config
        self.name = config.name
        self.hosts = hosts
        self.lb = lb.build(config.lb_policy, hosts, ring_size=config.ring_size)
        self.stats = stats
        self.connect_timeout = config.connect_timeout

    def connect(self, host: Host, on_done) -> None:
        """Open a connection to `host`; later call `on_done(conn, None)` or
        `on_done(None, exc)` (asyncio.TimeoutError when connect_timeout passed)."""
        loop = asyncio.get_running_loop()
        ep = host.endpoint
        self.stats.cx_total += 1
        task = loop.create_task(
            loop.create_connection(lambda: UpstreamConnection(host), ep.host, ep.port))
        timer = loop.call_later(self.connect_timeout, task.cancel)

        def done(t: asyncio.Task) -> None:
            timer.cancel()
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
            clusters[name] = Cluster(cfg, hosts, self.stats.cluster(name))
        for h in old_hosts.values():
            h.close_all()  # busy connections finish their exchange, then close on release
        self.clusters = clusters

    def sweep(self, now: float) -> None:
        """Close pooled connections idle for longer than their cluster's idle timeout."""
        for c in self.clusters.values():
            timeout = c.config.idle_timeout
            for h in c.hosts:
                if h.idle:
                    h.close_idle(now, timeout)

    def host_series(self) -> list:
        return [(c.name, h.key, h.rq_total, h.cx_active)
                for c in self.clusters.values() for h in c.hosts]

    def close(self) -> None:
        for c in self.clusters.values():
            for h in c.hosts:
                h.close_all()
