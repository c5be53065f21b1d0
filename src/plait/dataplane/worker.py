"""One worker: the listeners, clusters and stats of a single process.

The sidecar runs one worker per process (`--concurrency N` gives N processes sharing each
listening port with SO_REUSEPORT). A worker applies config snapshots atomically: cluster
hosts and their pooled connections carry over, listeners get the new router.
"""

from __future__ import annotations

import asyncio
import socket
import time

from plait.dataplane.accesslog import AccessLog
from plait.dataplane.config import Snapshot
from plait.dataplane.http.manager import HttpConnectionManager
from plait.dataplane.stats import Stats
from plait.dataplane.upstream.cluster import ClusterManager

SWEEP_INTERVAL = 0.5  # seconds: granularity of the header deadline and idle timeouts


class Worker:
    def __init__(self, snapshot: Snapshot, *, access_log: str | None) -> None:
        self.snapshot = snapshot
        self.stats = Stats()
        self.clusters = ClusterManager(self.stats)
        self.stats.host_source = self.clusters.host_series
        self.access_log = AccessLog(access_log) if access_log else None
        self.managers: dict[str, HttpConnectionManager] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self, sockets: dict[str, socket.socket]) -> None:
        """Serve every listener of the snapshot on its pre-bound socket."""
        self.loop = asyncio.get_running_loop()
        self.apply(self.snapshot)
        for name, mgr in self.managers.items():
            mgr.server = await self.loop.create_server(mgr.protocol, sock=sockets[name],
                                                       backlog=1024)

    def apply(self, snapshot: Snapshot) -> None:
        """Install a snapshot. Listener addresses are fixed at start; their routes are not."""
        self.snapshot = snapshot
        self.clusters.update(snapshot.clusters)
        for cfg in snapshot.listeners:
            mgr = self.managers.get(cfg.name)
            if mgr is None:
                self.managers[cfg.name] = HttpConnectionManager(
                    cfg, clusters=self.clusters, stats=self.stats.listener(cfg.name),
                    access_log=self.access_log, loop=self.loop)
            else:
                mgr.update(cfg)
        self.stats.config_updates += 1

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep()

    def sweep(self) -> None:
        now = time.monotonic()
        for mgr in self.managers.values():
            mgr.sweep(now)
        self.clusters.sweep(now)
        if self.access_log is not None:
            self.access_log.flush()

    async def drain(self, timeout: float) -> None:
        """Stop accepting and wait (up to `timeout`) for in-flight requests to finish."""
        drains = [asyncio.ensure_future(m.drain()) for m in self.managers.values()]
        if drains:
            done, pending = await asyncio.wait(drains, timeout=timeout)
            for task in pending:
                task.cancel()
        self.close()

    def close(self) -> None:
        for mgr in self.managers.values():
            if mgr.server is not None:
                mgr.server.close()
            for conn in list(mgr.connections):
                conn.abort()
        self.clusters.close()
        if self.access_log is not None:
            self.access_log.close()
