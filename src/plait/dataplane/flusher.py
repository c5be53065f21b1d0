"""Writes of one event-loop turn, sent together when the turn's callbacks are done.

A connection that has bytes to send puts them in its `out` list and is queued here once;
after the loop has run every callback of the current turn (all the reads that were ready),
each queued connection writes its bytes with one `transport.write`. Netty calls this flush
consolidation. The number of system calls stays the same, but they come back to back
instead of one between each request's work, and that is what matters on loopback: each
write to a peer that sleeps in `epoll_wait` wakes it, and waking a task on another CPU is
dear (in a VM, an interprocessor interrupt and an exit to the hypervisor). Written in a
burst, the writes find the peer already awake. On a two-vCPU VM this raised a worker's
throughput 1.7 to 2 times and cut its CPU per request by about a third
(docs/performance.md).

At low load there is nothing to gather: a turn holds one request, and waiting for the
turn's end only delays the write behind the work that follows it (the response's
accounting, the connection's return to its pool). So the flusher adapts, as Netty's
consolidation does when no read is in progress: after `SPARSE_TURNS` turns in a row with
a single connection writing, it writes at once (`direct`). Every `DIRECT_WRITES` writes
it gathers again for one turn to look at the load, and a turn with two or more writers
brings the gathering back.

A connection writes its own `out` at once before it closes (`write_out`), so nothing
queued is lost or reordered; one aborted meanwhile writes nothing.
"""

from __future__ import annotations

import asyncio

from plait.core.code import copy_function


SPARSE_TURNS = 4  # turns in a row with one writer before writing at once
DIRECT_WRITES = 64  # writes made at once before one turn gathers again to look


def write_out(conn) -> None:
    """Write what `conn` holds (its `out`) now, unless it is closed; either way `out` is
    emptied. `conn` has `out`, `queued`, `closed` and `transport`."""
    _write_all((conn,))


def _write_all(pending) -> None:
    """`write_out` for each connection, without a call per connection."""
    for conn in pending:
        conn.queued = False
        out = conn.out
        if out:
            if not conn.closed:
                conn.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()


# Upstream and downstream connections are two classes. CPython 3.11 specialises each
# attribute access for one type, in the code object: code that serves both kinds in turn
# misses at every access. So each kind has its own copy of the code that touches it, here
# and in `Flusher.queue_upstream` / `queue_downstream` (plait.core.code).
_write_upstreams = copy_function(_write_all, "_write_upstreams")
_write_downstreams = copy_function(_write_all, "_write_downstreams")


class Flusher:
    __slots__ = ("pending", "direct", "_scheduled", "_call_soon", "_sparse", "_budget")

    def __init__(self) -> None:
        self.pending: tuple[list, list] = ([], [])  # upstream, downstream connections
        self.direct = False  # write at once: the load is too sparse to gather
        self._scheduled = False  # run() is due at the end of this turn
        # The running loop's call_soon, looked up once: asyncio.get_running_loop() makes a
        # getpid() system call each time (CPython checks the loop is this process's).
        self._call_soon = None
        self._sparse = 0  # turns in a row with a single writer
        self._budget = 0  # writes at once left before the next look

    def queue(self, conn, side: int = 0) -> None:
        """Have `conn` write its `out` after the current turn (once, however often it is
        queued before then), or now while the load is sparse. `side` is 0 for an upstream
        connection, 1 for a downstream one: the hot paths call the copies named so."""
        if conn.queued:
            return
        if self.direct:  # write_out(conn), without the call
            out = conn.out
            if out:
                if not conn.closed:
                    conn.transport.write(out[0] if len(out) == 1 else b"".join(out))
                out.clear()
            self._budget -= 1
            if not self._budget:  # gather the next turn, to look at the load again
                self.direct = False
                self._sparse = SPARSE_TURNS - 1
            return
        conn.queued = True
        if not self._scheduled:
            self._scheduled = True
            call_soon = self._call_soon
            if call_soon is None:
                call_soon = self._call_soon = asyncio.get_running_loop().call_soon
            call_soon(self.run)
        self.pending[side].append(conn)

    queue_upstream = copy_function(queue, "queue_upstream", "Flusher.queue_upstream",
                                   defaults=(0,))
    queue_downstream = copy_function(queue, "queue_downstream", "Flusher.queue_downstream",
                                     defaults=(1,))

    def send(self, conn, data: bytes) -> None:
        """Write `data` to upstream `conn` after the current turn (or now: `queue`)."""
        conn.out.append(data)
        self.queue_upstream(conn)

    def run(self) -> None:
        if not self._scheduled:  # nothing queued (only a caller other than the loop's turn)
            return
        self._scheduled = False
        ups, downs = self.pending
        self.pending = ([], [])
        if len(ups) + len(downs) == 1:
            self._sparse += 1
            if self._sparse >= SPARSE_TURNS:
                self.direct = True
                self._budget = DIRECT_WRITES
                self._sparse = 0
        else:
            self._sparse = 0
        if ups:
            _write_upstreams(ups)
        if downs:
            _write_downstreams(downs)
