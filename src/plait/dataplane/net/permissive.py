"""The accept path of a listener with TLS: TLS only (STRICT), or TLS and plaintext on one
port (PERMISSIVE, for migrating a service to mTLS without a flag day).

Plaintext listeners keep asyncio's own `create_server`; only listeners with a transport
come here. Each readable event on the listening socket accepts a bounded batch. In
PERMISSIVE mode a new connection waits (with a deadline, as Envoy's tls_inspector does)
until its first byte arrives and looks at it without consuming it (`MSG_PEEK`): 0x16 is a
TLS handshake record, the first byte of every ClientHello, while HTTP/1 starts with a
letter. The socket is then handed to the event loop with `connect_accepted_socket`, with
the current server context or without TLS. The context is looked up per connection, so a
renewed certificate or a rotated bundle applies from the next handshake on.

A TLS connection's verified peer identity (the SPIFFE ID in its certificate) is kept on
the downstream connection, `peer_identity`, for the filters (authorization) and the
access log; a peer that `match_subject_alt_names` does not accept is closed at once.
Handshake failures (no client certificate in STRICT, a certificate from another CA) are
closed and counted: `downstream_tls_handshake_error_total` on the listener.
"""

from __future__ import annotations

import asyncio
import os
import socket

from plait.dataplane.http.downstream import DownstreamConnection
from plait.dataplane.net.tls_store import TlsStore, name_accepted, peer_identity

ACCEPT_BATCH = 64  # connections accepted per readable event
PEEK_TIMEOUT = 15.0  # seconds for the first byte; Envoy's listener_filters_timeout default
HANDSHAKE_TIMEOUT = 10.0  # seconds
MAX_OPENING = 1024  # connections peeking or in handshake at once; more are refused
TLS_RECORD_HANDSHAKE = 0x16


class TlsDownstream(DownstreamConnection):
    """A downstream connection over TLS: its peer's identity is known."""

    __slots__ = ("peer_identity",)

    def connection_made(self, transport) -> None:
        peer = peer_identity(transport.get_extra_info("ssl_object"))
        self.peer_identity = peer
        transport_cfg = self.mgr.config.transport
        if transport_cfg is not None and not name_accepted(transport_cfg.tls.peer_names, peer):
            self.mgr.stats.count("downstream_tls_peer_rejected_total")
            self.closed = True
            transport.abort()
            return  # transport stays None: connection_lost has nothing to undo
        super().connection_made(transport)


class TlsListener:
    """Serves one listening socket for `mgr` (an HttpConnectionManager); stands in for the
    asyncio Server (`sockets`, `close()`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, mgr,
                 store: TlsStore) -> None:
        self.loop = loop
        self.sock = sock
        self.sockets = [sock]
        self.mgr = mgr
        self.store = store
        self.closed = False
        self._opening = 0
        self._peeking: dict[int, tuple[socket.socket, asyncio.TimerHandle]] = {}
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._on_acceptable)

    @classmethod
    def take_over(cls, loop, server: asyncio.AbstractServer, mgr, store) -> TlsListener:
        """Serve the socket of a plaintext `server` from now on (a listener that gained
        TLS): the listening socket is duplicated before the server closes its copy, so the
        port never stops listening and queued connections are kept."""
        old = server.sockets[0]
        sock = socket.socket(fileno=os.dup(old.fileno()))
        server.close()
        return cls(loop, sock, mgr, store)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for fd, (conn, timer) in list(self._peeking.items()):
            timer.cancel()
            self.loop.remove_reader(fd)
            conn.close()
        self._peeking.clear()

    # -- accepting ------------------------------------------------------------------------

    def _on_acceptable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and friends: try again on the next event
                self.mgr.stats.count("downstream_cx_accept_error_total")
                return
            if self._opening >= MAX_OPENING:
                self.mgr.stats.count("downstream_cx_overflow_total")
                conn.close()
                continue
            conn.setblocking(False)
            # Handshake flights are several small writes: without this, Nagle's algorithm
            # meets the peer's delayed ACK and each handshake stalls for tens of ms.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = self.mgr.config.transport
            if transport is None:
                self._start(conn, tls=False)
            elif transport.permissive:
                self._peek(conn)
            else:
                self._start(conn, tls=True)

    def _peek(self, conn: socket.socket) -> None:
        fd = conn.fileno()
        self._opening += 1
        timer = self.loop.call_later(PEEK_TIMEOUT, self._peek_done, conn, None)
        self._peeking[fd] = (conn, timer)
        self.loop.add_reader(fd, self._on_first_byte, conn)

    def _on_first_byte(self, conn: socket.socket) -> None:
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            first = b""
        self._peek_done(conn, first)

    def _peek_done(self, conn: socket.socket, first: bytes | None) -> None:
        entry = self._peeking.pop(conn.fileno(), None)
        if entry is None:
            return
        self._opening -= 1
        entry[1].cancel()
        self.loop.remove_reader(conn.fileno())
        if not first:  # the peer closed, or sent nothing in time
            conn.close()
            return
        self.mgr.stats.count("downstream_cx_tls_total" if first[0] == TLS_RECORD_HANDSHAKE
                             else "downstream_cx_plaintext_total")
        self._start(conn, tls=first[0] == TLS_RECORD_HANDSHAKE)

    def _start(self, conn: socket.socket, *, tls: bool) -> None:
        mgr = self.mgr
        if not tls:
            coro = self.loop.connect_accepted_socket(mgr.protocol, conn)
        else:
            transport = mgr.config.transport
            ctx = self.store.server(transport.tls) if transport is not None else None
            if ctx is None:  # no certificate to present: refuse rather than downgrade
                mgr.stats.count("downstream_tls_no_certificate_total")
                conn.close()
                return
            coro = self.loop.connect_accepted_socket(
                lambda: mgr.protocol(TlsDownstream), conn, ssl=ctx,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        self._opening += 1
        task = self.loop.create_task(coro)
        task.add_done_callback(lambda t: self._started(t, conn, tls))

    def _started(self, task: asyncio.Task, conn: socket.socket, tls: bool) -> None:
        self._opening -= 1
        if task.cancelled() or task.exception() is not None:
            self.mgr.stats.count("downstream_tls_handshake_error_total" if tls
                                 else "downstream_cx_start_error_total")
            conn.close()


async def serve(loop: asyncio.AbstractEventLoop, sock: socket.socket, mgr, store: TlsStore):
    """Start serving `sock` for `mgr`: asyncio's server for a plaintext listener, a
    TlsListener for one with a transport."""
    if mgr.config.transport is None:
        return await loop.create_server(mgr.protocol, sock=sock, backlog=1024)
    return TlsListener(loop, sock, mgr, store)


def follow(loop: asyncio.AbstractEventLoop, mgr, store: TlsStore):
    """The server for `mgr` after its config changed in place: a plaintext listener that
    gained TLS moves to the TLS accept path (which also serves plaintext, so it stays
    there if TLS is later turned off)."""
    server = mgr.server
    if mgr.config.transport is not None and server is not None and \
            not isinstance(server, TlsListener):
        return TlsListener.take_over(loop, server, mgr, store)
    return server
