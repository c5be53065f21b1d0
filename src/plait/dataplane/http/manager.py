"""The HTTP connection manager of one listener: what its connections share.

It holds the listener's current router (swapped whole when config changes, so a new
route table governs the next request while in-flight ones finish on the old), its
connections, its stats and the access log, and it runs the periodic sweep that enforces
the request-headers deadline and the idle timeout.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left

from plait.core.errors import Reason
from plait.dataplane import filters
from plait.dataplane.deadlines import Deadlines
from plait.dataplane.flusher import Flusher
from plait.dataplane.config import ListenerConfig
from plait.dataplane.http.caller import caller_headers
from plait.dataplane.http.downstream import DownstreamConnection
from plait.dataplane.router import Router
from plait.dataplane.stats import DURATION_BOUNDS


class HttpConnectionManager:
    def __init__(self, config: ListenerConfig, *, clusters, stats, access_log,
                 loop: asyncio.AbstractEventLoop, events=None, node=("", ""),
                 deadlines: Deadlines | None = None, flusher: Flusher | None = None) -> None:
        self.config = config
        self.router = Router(config.route_table) if config.route_table is not None else None
        self.filters = filters.build_chain(config.http_filters)
        self.completions = filters.completions(self.filters)
        self.events = events  # the worker's governance EventBuffer, or None
        self.node = node  # (app, node id) of this sidecar
        self.caller_headers = caller_headers(config.direction, *node)
        self.clusters = clusters
        self.stats = stats
        self.access_log = access_log
        self.loop = loop
        self.connections: set[DownstreamConnection] = set()
        self.draining = False
        self.server: asyncio.AbstractServer | None = None
        self.deadlines = deadlines if deadlines is not None else Deadlines()
        self.flusher = flusher if flusher is not None else Flusher()
        self._empty = asyncio.Event()
        self._empty.set()

    def update(self, config: ListenerConfig) -> None:
        self.config = config
        self.router = Router(config.route_table) if config.route_table is not None else None
        self.filters = filters.build_chain(config.http_filters, self.filters)
        self.completions = filters.completions(self.filters)
        self.caller_headers = caller_headers(config.direction, *self.node)

    def protocol(self, kind: type = DownstreamConnection) -> DownstreamConnection:
        """A new downstream connection (`kind`: a subclass, for TLS connections)."""
        self._empty.clear()
        return kind(self)

    def record(self, ex) -> None:
        """Account for a finished exchange: cluster stats, local replies, access log."""
        now = time.monotonic()
        cluster = ex.cluster
        if cluster is not None:
            st = cluster.stats
            st.rq_active -= 1
            code = ex.code
            st.rq_by_code[code] = st.rq_by_code.get(code, 0) + 1
            seconds = now - ex.t_start  # st.duration.observe(seconds), without the call
            duration = st.duration
            duration.counts[bisect_left(DURATION_BOUNDS, seconds)] += 1
            duration.sum += seconds
            if ex.retries and ex.reason is None:
                st.rq_retry_success += 1
        if ex.reason is not None:
            replies = self.stats.local_replies
            replies[ex.reason.value] = replies.get(ex.reason.value, 0) + 1
        if self.access_log is not None:
            self.access_log.write(self.config.name, ex, now)

    def log_protocol_error(self, conn, reason: Reason, detail: str) -> None:
        if self.access_log is not None:
            peer = conn.transport.get_extra_info("peername") if conn.transport else None
            self.access_log.write_protocol_error(self.config.name, reason.value, detail, peer)

    def on_connection_closed(self) -> None:
        if not self.connections:
            self._empty.set()

    def sweep(self, now: float) -> None:
        """Enforce the request-headers deadline (408) and the idle timeout; while draining,
        close connections that are between requests."""
        cfg = self.config
        for conn in list(self.connections):
            if conn.exchange is not None or conn.closed:
                continue
            if conn.codec.in_head:
                if not conn.head_seen:
                    conn.head_seen = now
                elif cfg.request_headers_timeout and now - conn.head_seen >= cfg.request_headers_timeout:
                    conn.send_local(Reason.HEADERS_TIMEOUT)
                    conn.flush()
                    conn.close()
            elif self.draining:
                conn.close()
            elif not conn.idle_seen:
                conn.idle_seen = now
            elif cfg.idle_timeout and now - conn.idle_seen >= cfg.idle_timeout:
                conn.close()

    async def drain(self) -> None:
        """Stop accepting, let in-flight requests finish, close connections as they idle."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        self.sweep(time.monotonic())
        await self._empty.wait()
