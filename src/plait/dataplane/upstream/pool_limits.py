"""Connection-pool circuit breaking: Envoy's `circuit_breakers` thresholds of a cluster.

Four limits protect an upstream from a caller that would pile on more than it can serve
(Envoy's semantics and defaults, `config.PoolLimits`):

- max_connections: connections open or opening. A request that needs a new connection
  while the cluster is at the limit waits in the cluster's pending queue until a
  connection is released (it is handed over) or closed (its slot is);
- max_pending_requests: the length of that queue; a request over it is answered at once
  with 503 `overflow`;
- max_requests: requests in flight in the cluster (checked by the exchange);
- max_retries: retries in flight (scheduled and not yet resolved).

Counting costs an addition when a connection opens or closes, never per pooled request.
Each worker process keeps its own counts, so with N workers the cluster-wide ceiling is N
times the configured value (Envoy's counts are per process too, shared by its threads).
The limiter outlives config pushes: the cluster manager hands it to the next `Cluster`.
"""

from __future__ import annotations

from collections import deque

from plait.dataplane.config import PoolLimits


class PoolOverflow(Exception):
    """Given to a connect callback instead of a connection: the pending queue is full."""


OVERFLOW = PoolOverflow("pending queue full")


class _Waiter:
    __slots__ = ("host", "on_done", "alive")

    def __init__(self, host, on_done, alive) -> None:
        self.host = host
        self.on_done = on_done
        self.alive = alive  # () -> bool: False once the request no longer wants it


class ConnectionLimiter:
    """The live counts behind a cluster's `PoolLimits`, and its pending queue."""

    __slots__ = ("limits", "stats", "cluster", "connections", "retries", "pending")

    def __init__(self, limits: PoolLimits, stats, cluster=None) -> None:
        self.limits = limits
        self.stats = stats  # the cluster's ClusterStats
        self.cluster = cluster  # the current Cluster, which opens connections for waiters
        self.connections = 0  # open or opening
        self.retries = 0  # in flight
        self.pending: deque[_Waiter] = deque()

    def try_open(self) -> bool:
        """Take a connection slot if there is one."""
        if self.connections >= self.limits.max_connections:
            return False
        self.connections += 1
        return True

    def wait(self, host, on_done, alive) -> bool:
        """Queue a request for a connection to `host`; False if the queue is full."""
        if len(self.pending) >= self.limits.max_pending_requests:
            self._purge()
            if len(self.pending) >= self.limits.max_pending_requests:
                return False
        self.pending.append(_Waiter(host, on_done, alive))
        self.stats.rq_pending_active = len(self.pending)
        return True

    def on_closed(self) -> None:
        """A connection (or a connection attempt) is gone: its slot goes to the first
        request still waiting, which opens a connection to the host it chose."""
        self.connections -= 1
        while self.pending:
            w = self.pending.popleft()
            self.stats.rq_pending_active = len(self.pending)
            if w.alive():
                self.cluster.connect(w.host, w.on_done, alive=w.alive)
                return

    def on_idle(self, host) -> None:
        """A connection to `host` went back to the pool while requests wait: hand it to
        the first one waiting for that host; if none does, close it so the slot serves
        the first waiter elsewhere (an idle connection beside a queue is waste)."""
        self._purge()
        if not self.pending:
            return
        for w in self.pending:
            if w.host is host:
                self.pending.remove(w)
                self.stats.rq_pending_active = len(self.pending)
                conn = host.take_idle()
                if conn is not None:
                    w.on_done(conn, None)
                return
        conn = host.take_idle()
        if conn is not None:
            conn.close()  # its connection_lost frees the slot (on_closed)

    def sweep(self) -> None:
        """Forget requests that stopped waiting (timed out, went away)."""
        if self.pending:
            self._purge()

    def _purge(self) -> None:
        live = [w for w in self.pending if w.alive()]
        if len(live) != len(self.pending):
            self.pending = deque(live)
            self.stats.rq_pending_active = len(live)
