"""One worker: the listeners, clusters and stats of a single process.

The sidecar runs one worker per process (`--concurrency N` gives N processes sharing each
listening port with SO_REUSEPORT). A worker applies config snapshots atomically: cluster
hosts and their pooled connections carry over, listeners get the new router.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time

from plait.dataplane.accesslog import AccessLog
from plait.dataplane.config import Direction, Snapshot
from plait.dataplane.deadlines import Deadlines
from plait.dataplane.flusher import Flusher
from plait.dataplane.events import EventBuffer
from plait.dataplane.http.manager import HttpConnectionManager
from plait.dataplane.net import permissive
from plait.dataplane.net.tls_store import TlsStore
from plait.dataplane.stats import Stats
from plait.dataplane.upstream.cluster import SWEEP_INTERVAL, ClusterManager



def bind_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening, non-blocking TCP socket. Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, port))
        s.listen(1024)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


class Worker:
    def __init__(self, snapshot: Snapshot, *, access_log: str | None,
                 node: tuple[str, str] = ("", ""), tls: TlsStore | None = None,
                 shared_ports: bool = False) -> None:
        """`shared_ports`: several workers serve the same listeners, so new listeners are
        bound with SO_REUSEPORT; a single worker binds exclusively, so another process
        cannot silently take part of its port."""
        self.snapshot = snapshot
        self.shared_ports = shared_ports
        self.tls = tls or TlsStore()  # certificates for TLS listeners and clusters
        self.node = node  # (app, node id): caller identity on outbound listeners
        self.stats = Stats()
        self.deadlines = Deadlines()  # route timeouts of every listener of this worker
        self.flusher = Flusher()  # the writes of each event-loop turn, for every listener
        self.events = EventBuffer()
        self.clusters = ClusterManager(self.stats)
        self.clusters.tls = self.tls
        self.clusters.on_event = self.events.cluster_event
        self.stats.host_source = self.clusters.host_series
        self.access_log = AccessLog(access_log) if access_log else None
        self.managers: dict[str, HttpConnectionManager] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._retiring: set[asyncio.Task] = set()

    async def start(self, sockets: dict[str, socket.socket]) -> None:
        """Serve the snapshot's listeners; `sockets` holds pre-bound ones by name."""
        self.loop = asyncio.get_running_loop()
        await self.apply(self.snapshot, sockets)

    async def apply(self, snapshot: Snapshot,
                    sockets: dict[str, socket.socket] | None = None) -> None:
        """Install a snapshot: clusters first, then listeners. A listener whose address
        changed or that is gone drains on its own; a new one is bound here (with
        SO_REUSEPORT when workers share ports)."""
        self.snapshot = snapshot
        self.clusters.update(snapshot.clusters)
        wanted = set()
        for cfg in snapshot.listeners:
            wanted.add(cfg.name)
            mgr = self.managers.get(cfg.name)
            if mgr is not None and (mgr.config.host, mgr.config.port) == (cfg.host, cfg.port):
                mgr.update(cfg)
                mgr.server = permissive.follow(self.loop, mgr, self.tls)
                continue
            if mgr is not None:
                self._retire(mgr)
            sock = (sockets or {}).get(cfg.name)
            try:
                if sock is None:
                    sock = bind_socket(cfg.host, cfg.port, reuse_port=self.shared_ports)
                mgr = HttpConnectionManager(
                    cfg, clusters=self.clusters, stats=self.stats.listener(cfg.name),
                    access_log=self.access_log, loop=self.loop, events=self.events,
                    node=self.node, deadlines=self.deadlines, flusher=self.flusher)
                mgr.server = await permissive.serve(self.loop, sock, mgr, self.tls)
            except OSError as exc:
                self.stats.listener_bind_failures += 1
                self.managers.pop(cfg.name, None)
                print(f"plait sidecar: listener {cfg.name} cannot bind "
                      f"{cfg.host}:{cfg.port}: {exc}", file=sys.stderr, flush=True)
                continue
            self.managers[cfg.name] = mgr
        for name in [n for n in self.managers if n not in wanted]:
            self._retire(self.managers[name])
        self.stats.config_updates += 1

    def _retire(self, mgr: HttpConnectionManager) -> None:
        self.managers.pop(mgr.config.name, None)
        task = self.loop.create_task(mgr.drain())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def listener_addresses(self) -> dict[str, tuple[str, int]]:
        return {name: mgr.server.sockets[0].getsockname()[:2]
                for name, mgr in self.managers.items() if mgr.server is not None}

    def drain_events(self) -> dict:
        """The governance events held since the last call, and whether the local app
        looks unhealthy (for the registry): {"events", "dropped", "inbound_unhealthy"}."""
        return {**self.events.drain(), "inbound_unhealthy": self.inbound_unhealthy()}

    def inbound_unhealthy(self) -> bool:
        """True when every endpoint of a cluster that serves an INBOUND listener (the
        local app) is ejected or failing its health checks."""
        names = {n for n in self.clusters.clusters if n.startswith("inbound|")}
        for cfg in self.snapshot.listeners:
            if cfg.direction is Direction.INBOUND and cfg.route_table is not None:
                for vh in cfg.route_table.virtual_hosts:
                    for route in vh.routes:
                        names.add(route.cluster)
                        names.update(w.name for w in route.weighted_clusters)
        for name in names:
            cluster = self.clusters.get(name)
            if cluster is not None and cluster.hosts and all(
                    h.ejected or h.hc_failed for h in cluster.hosts):
                return True
        return False

    async def sweep_forever(self) -> None:
        """The worker's periodic duties: the sweep, and route timeouts (owned here)."""
        ticker = asyncio.get_running_loop().create_task(self.deadlines.tick_forever())
        try:
            while True:
                await asyncio.sleep(SWEEP_INTERVAL)
                self.sweep()
        finally:
            ticker.cancel()

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
        for task in list(self._retiring):
            task.cancel()
        for mgr in self.managers.values():
            if mgr.server is not None:
                mgr.server.close()
            for conn in list(mgr.connections):
                conn.abort()
        self.clusters.close()
        if self.access_log is not None:
            self.access_log.close()
