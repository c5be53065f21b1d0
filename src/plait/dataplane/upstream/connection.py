"""Upstream HTTP/1.1 connections and the per-host pool that keeps them alive.

A connection belongs either to the pool (idle) or to one exchange (busy). Bytes from the
upstream are parsed by the sans-IO client codec and handed to the owning exchange; a
connection that closes while idle simply leaves the pool. Idle connections older than the
cluster's idle timeout are closed by the cluster manager's sweep.
"""

from __future__ import annotations

import asyncio

from plait.codec.http1 import Http1ClientCodec
from plait.core.errors import ProtocolError


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("host", "transport", "codec", "exchange", "requests", "idle_since",
                 "closed", "reusable", "received", "pool", "out", "queued")

    def __init__(self, host: "Host", pool=None) -> None:
        self.host = host
        self.pool = pool  # the ConnectionLimiter whose slot this connection holds
        self.transport = None
        self.codec = Http1ClientCodec()
        self.exchange = None
        self.requests = 0
        self.idle_since = 0.0
        self.closed = False
        self.reusable = True
        self.received = False  # any byte of the current response seen
        self.out: list[bytes] = []  # to write at the end of this event-loop turn
        self.queued = False  # waiting in the flusher (plait.dataplane.flusher)

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.host.cx_active += 1

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes nobody asked for: the peer is confused; never reuse this connection.
            self.close()
            return
        self.received = True
        try:
            events = self.codec.receive_data(data)
        except ProtocolError as exc:
            self.reusable = False
            exchange.on_upstream_error(self, exc)
            return
        exchange.on_upstream_events(self, events)

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.host.cx_active -= 1
        pool = self.pool
        if pool is not None:
            self.pool = None
            pool.on_closed()
        exchange = self.exchange
        if exchange is not None:
            try:
                tail = self.codec.receive_eof()
            except ProtocolError:
                tail = None
            exchange.on_upstream_lost(self, tail)
        else:
            self.host.discard(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.pause_downstream_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.resume_downstream_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.reusable = False
            self.out.clear()
            if self.transport is not None:
                self.transport.abort()


class Host:
    """One endpoint of a cluster with its live state: pool, active requests, counters."""

    __slots__ = ("endpoint", "key", "idle", "active", "cx_active", "rq_total", "max_requests",
                 "retired", "ejected", "times_ejected", "consecutive_5xx", "consecutive_gateway",
                 "bucket_requests", "bucket_failures", "hc_failed", "hc_failures",
                 "hc_successes", "pool")

    def __init__(self, endpoint, *, max_requests: int = 0) -> None:
        self.endpoint = endpoint
        self.key = endpoint.key
        self.idle: list[UpstreamConnection] = []
        self.active = 0  # requests in flight, for least-request
        self.cx_active = 0
        self.rq_total = 0
        self.max_requests = max_requests
        self.retired = False  # removed from its cluster: connections close when released
        self.ejected = False  # by outlier detection
        self.times_ejected = 0
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        # tries and failed tries since the outlier detector's last tick (failure-rate rule)
        self.bucket_requests = 0
        self.bucket_failures = 0
        self.hc_failed = False  # by active health checking
        self.hc_failures = 0  # consecutive failed checks
        self.hc_successes = 0  # consecutive passed checks while failed
        self.pool = None  # the cluster's ConnectionLimiter, set by the cluster manager

    def take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after a complete exchange; keep it if it can serve again."""
        conn.exchange = None
        conn.received = False
        if (conn.closed or not conn.reusable or self.retired or conn.out
                or (self.max_requests and conn.requests >= self.max_requests)):
            conn.close()
            return
        conn.idle_since = 0.0  # stamped by the next sweep that sees it idle
        self.idle.append(conn)
        pool = self.pool
        if pool is not None and pool.pending:
            pool.on_idle(self)

    def discard(self, conn: UpstreamConnection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close_idle(self, now: float, timeout: float) -> None:
        """Close pooled connections idle for `timeout` seconds, as seen by successive
        sweeps (no clock is read when a connection returns to the pool)."""
        keep = []
        for conn in self.idle:
            if conn.closed:
                continue
            if not conn.idle_since:
                conn.idle_since = now
            elif now - conn.idle_since >= timeout:
                conn.close()
                continue
            keep.append(conn)
        self.idle[:] = keep

    def close_all(self) -> None:
        self.retired = True
        for conn in self.idle:
            conn.close()
        self.idle.clear()
