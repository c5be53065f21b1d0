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


def write_out(conn) -> None:
    """Write what `conn` holds (its `out`) now, unless it is closed; either way `out` is
    emptied. `conn` has `out`, `queued`, `closed` and `transport`."""
    conn.queued = False
    out = conn.out
    if out:
        if not conn.closed:
            conn.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()


SPARSE_TURNS = 4  # turns in a row with one writer before writing at once
DIRECT_WRITES = 64  # writes made at once before one turn gathers again to look


class Flusher:
    __slots__ = ("pending", "direct", "_call_soon", "_sparse", "_budget")

    def __init__(self) -> None:
        self.pending: list = []
        self.direct = False  # write at once: the load is too sparse to gather
        # The running loop's call_soon, looked up once: asyncio.get_running_loop() makes a
        # getpid() system call each time (CPython checks the loop is this process's).
        self._call_soon = None
        self._sparse = 0  # turns in a row with a single writer
        self._budget = 0  # writes at once left before the next look

    def queue(self, conn) -> None:
        """Have `conn` write its `out` after the current turn (once, however often it is
        queued before then), or now while the load is sparse."""
        if conn.queued:
            return
        if self.direct:
            write_out(conn)
            self._budget -= 1
            if not self._budget:  # gather the next turn, to look at the load again
                self.direct = False
                self._sparse = SPARSE_TURNS - 1
            return
        conn.queued = True
        if not self.pending:
            call_soon = self._call_soon
            if call_soon is None:
                call_soon = self._call_soon = asyncio.get_running_loop().call_soon
            call_soon(self.run)
        self.pending.append(conn)

    def send(self, conn, data: bytes) -> None:
        """Write `data` to `conn` after the current turn (or now: `queue`)."""
        conn.out.append(data)
        self.queue(conn)

    def run(self) -> None:
        pending, self.pending = self.pending, []
        if len(pending) == 1:
            self._sparse += 1
            if self._sparse >= SPARSE_TURNS:
                self.direct = True
                self._budget = DIRECT_WRITES
                self._sparse = 0
        else:
            self._sparse = 0
        for conn in pending:  # write_out(conn), without the call
            conn.queued = False
            out = conn.out
            if out:
                if not conn.closed:
                    conn.transport.write(out[0] if len(out) == 1 else b"".join(out))
                out.clear()
