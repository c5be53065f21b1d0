"""Request mirroring: copy a share of requests to a shadow cluster, fire and forget.

The copy goes out on its own pooled connection with the authority suffixed `-shadow`
(Envoy's convention, so the shadow can tell mirrored traffic apart); its response is read
and dropped. Nothing about the shadow — slowness, errors, a dead cluster — can reach the
caller: the caller's exchange never waits on it. Requests with a body are mirrored once
the whole body is held (within the retry buffer); larger ones are counted and skipped.
"""

from __future__ import annotations

import asyncio
import random

from plait.codec.http1 import EndOfMessage

SHADOW_TIMEOUT = 30.0  # seconds a shadow request may take before its connection is dropped


def choose(mirrors) -> tuple[str, ...]:
    """The shadow clusters this request goes to, each by its configured fraction."""
    return tuple(m.cluster for m in mirrors if m.fraction >= 1.0 or random.random() < m.fraction)


def shadow_head(head: bytes) -> bytes:
    """The request head with `-shadow` added to the host (before any port)."""
    start = head.find(b"\r\nhost: ")
    if start < 0:
        return head
    start += 8
    end = head.index(b"\r\n", start)
    host = head[start:end]
    name, colon, port = host.rpartition(b":")
    # A port follows a name without colons or a bracketed IPv6 literal (`[::1]:8080`).
    if colon and port.isdigit() and (name.endswith(b"]") or b":" not in name):
        host = name + b"-shadow:" + port
    else:
        host = host + b"-shadow"
    return head[:start] + host + head[end:]


def send(cluster, head: bytes, body: bytes) -> None:
    _Shadow(cluster, shadow_head(head) + body).start()


class _Shadow:
    """Just enough of an exchange for an upstream connection to report to."""

    __slots__ = ("cluster", "wire", "host", "conn", "timer")

    def __init__(self, cluster, wire: bytes) -> None:
        self.cluster = cluster
        self.wire = wire
        self.host = None
        self.conn = None
        self.timer = None

    def start(self) -> None:
        stats = self.cluster.stats
        stats.rq_mirror += 1
        host = self.host = self.cluster.lb.pick(None)
        if host is None:
            stats.rq_mirror_failed += 1
            return
        conn = host.take_idle()
        if conn is not None:
            self._attach(conn)
        else:
            self.cluster.connect(host, self._connected)

    def _connected(self, conn, exc) -> None:
        if exc is not None:
            self.cluster.stats.rq_mirror_failed += 1
            return
        self._attach(conn)

    def _attach(self, conn) -> None:
        self.conn = conn
        conn.exchange = self
        conn.requests += 1
        self.timer = asyncio.get_running_loop().call_later(SHADOW_TIMEOUT, self._give_up)
        conn.transport.write(self.wire)

    def _done(self, ok: bool) -> None:
        if self.timer is not None:
            self.timer.cancel()
        conn, self.conn = self.conn, None
        if conn is not None:
            if ok:
                conn.host.release(conn)
            else:
                conn.exchange = None
                conn.close()
        if not ok:
            self.cluster.stats.rq_mirror_failed += 1

    def _give_up(self) -> None:
        self.timer = None
        self._done(False)

    # -- what an UpstreamConnection calls -------------------------------------------------

    def on_upstream_events(self, conn, events: list) -> None:
        for ev in events:
            if type(ev) is EndOfMessage:
                self._done(True)
                return

    def on_upstream_lost(self, conn, tail) -> None:
        if conn is self.conn:
            self._done(bool(tail))

    def on_upstream_error(self, conn, exc) -> None:
        if conn is self.conn:
            self._done(False)

    def pause_downstream_reading(self) -> None:
        pass

    def resume_downstream_reading(self) -> None:
        pass
