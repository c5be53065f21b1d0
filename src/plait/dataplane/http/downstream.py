"""A downstream (client) HTTP/1.1 connection: parse, hand each request to an exchange.

Requests on one connection are answered strictly in order (RFC 9112 9.3.2): while an
exchange is waiting for its response, later pipelined events wait in a backlog, and reading
pauses if the backlog grows. Writes are gathered and flushed once per batch of events, so a
small response costs one send, made when the event-loop turn's reads are done
(`plait.dataplane.flusher`). Malformed input is answered with 400 or 431 and the
connection closed; the request-headers deadline (408) and the idle timeout are enforced by
the listener's periodic sweep instead of a timer per request.
"""

from __future__ import annotations

import asyncio

from plait.codec.http1 import Data, EndOfMessage, Http1ServerCodec, Request, Upgraded
from plait.core.errors import ProtocolError, Reason
from plait.dataplane.flusher import write_out
from plait.dataplane.http.exchange import Exchange
from plait.dataplane.http.local_reply import local_response

_new = object.__new__
_BACKLOG_MAX = 64  # pipelined events held before we stop reading
_DISCARD_MAX = 1 << 20  # request body bytes we read and drop after answering early


class DownstreamConnection(asyncio.Protocol):
    __slots__ = ("mgr", "transport", "codec", "exchange", "backlog", "out", "close_after",
                 "tunnel", "discarded", "head_seen", "idle_seen", "paused", "closed",
                 "write_paused", "queued")

    # The SPIFFE ID of a peer that completed mTLS (a subclass for TLS connections sets it,
    # `plait.dataplane.net.permissive`); a class attribute, so plaintext pays nothing.
    peer_identity: str | None = None

    def __init__(self, mgr) -> None:
        self.mgr = mgr
        self.transport = None
        self.codec = Http1ServerCodec(max_header_bytes=mgr.config.max_request_headers_bytes)
        self.exchange: Exchange | None = None
        self.backlog: list | None = None
        self.out: list[bytes] = []
        self.close_after = False
        self.tunnel = False
        self.discarded = 0
        self.head_seen = 0.0  # sweep time at which a partial head was first seen
        self.idle_seen = 0.0  # sweep time at which the connection was first seen idle
        self.paused = False
        self.closed = False
        self.write_paused = False
        self.queued = False  # waiting in the flusher to write `out`

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        mgr = self.mgr
        stats = mgr.stats
        limit = mgr.config.connection_limit
        if limit and len(mgr.connections) >= limit:
            stats.cx_overflow += 1
            self.closed = True
            transport.abort()
            return
        mgr.connections.add(self)
        stats.cx_total += 1
        stats.cx_active += 1

    def data_received(self, data: bytes) -> None:
        try:
            events = self.codec.receive_data(data)
        except ProtocolError as exc:
            return self.protocol_error(exc)
        for ev in events:
            self.on_event(ev)
        if self.out:  # mostly empty here: the answer comes from upstream later
            self.flush()

    def eof_received(self):
        return False

    def connection_lost(self, exc) -> None:
        if self.transport is None:
            return
        self.closed = True
        mgr = self.mgr
        if self in mgr.connections:
            mgr.connections.discard(self)
            mgr.stats.cx_active -= 1
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            self.backlog = None
            ex.on_downstream_lost()
        mgr.on_connection_closed()

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.exchange
        if ex is not None and ex.upstream is not None:
            ex.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.exchange
        if ex is not None and ex.upstream is not None:
            ex.upstream.transport.resume_reading()

    # -- events ---------------------------------------------------------------------------

    def on_event(self, ev) -> None:
        kind = type(ev)
        if self.tunnel or kind is Upgraded:
            self.tunnel = True
            ex = self.exchange
            if ex is not None and not ex.finished and ev.data:
                ex.on_request_data(ev.data)
            return
        if self.backlog is not None:
            self.backlog.append(ev)
            if len(self.backlog) > _BACKLOG_MAX:
                self.pause_reading()
            return
        if kind is Request:
            self.head_seen = self.idle_seen = 0.0
            self.mgr.stats.rq_total += 1
            ex = self.exchange = _new(Exchange)  # Exchange(self, ev), the cheaper way:
            ex.__init__(self, ev)  # see plait.codec.http1._new
            ex.start()
        elif kind is Data:
            ex = self.exchange
            if ex is None:
                return
            if ex.finished:
                self.discarded += len(ev.data)
                if self.discarded > _DISCARD_MAX:
                    self.close()
            else:
                ex.on_request_data(ev.data)
        elif kind is EndOfMessage:
            ex = self.exchange
            if ex is None:
                return
            if ex.finished:
                self.next_request()
            else:
                ex.on_request_end(ev.trailers)
                self.backlog = []

    def next_request(self) -> None:
        self.exchange = None
        self.discarded = 0
        if self.close_after or self.mgr.draining:
            self.flush()
            self.close()
            return
        backlog = self.backlog
        self.backlog = None
        if backlog:
            for ev in backlog:
                self.on_event(ev)
        if self.paused and self.backlog is None:
            self.resume_reading()

    def protocol_error(self, exc: ProtocolError) -> None:
        mgr = self.mgr
        reason = exc.reason
        errors = mgr.stats.protocol_errors
        errors[reason.value] = errors.get(reason.value, 0) + 1
        mgr.log_protocol_error(self, reason, str(exc))
        if self.exchange is None:
            self.send_local(reason)
        self.flush()
        self.close()

    def send_local(self, reason: Reason) -> None:
        """Answer without a request to hang it on (malformed input, header deadline)."""
        replies = self.mgr.stats.local_replies
        replies[reason.value] = replies.get(reason.value, 0) + 1
        self.out.append(local_response(reason, keep_alive=False)[1])

    # -- writing and closing --------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.out.append(data)

    def flush(self) -> None:
        """Write what was sent at the end of this event-loop turn (`plait.dataplane.flusher`)."""
        if self.out and not self.closed:
            self.mgr.flusher.queue_downstream(self)

    def pause_reading(self) -> None:
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after what is written is sent."""
        if not self.closed:
            write_out(self)
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Close at once (a response cannot be completed)."""
        self.out.clear()
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def peer_ip(self) -> bytes | None:
        """The client's address (for source-IP hashing), or None if unknown."""
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return peer[0].encode() if peer else None

    @property
    def idle(self) -> bool:
        return self.exchange is None and not self.codec.in_head
