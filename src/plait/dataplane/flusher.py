"""Writes of one event-loop turn, sent together when the turn's callbacks are done.

A connection that has bytes to send puts them in its `out` list and is queued here once;
after the loop has run every callback of the current turn (all the reads that were ready),
each queued connection writes its bytes with one `transport.write`. Netty calls this flush
consolidation. The number of system calls stays the same, but they come back to back
instead of one between each request's work, and that is what matters on loopback: each
write to a peer that sleeps in `epoll_wait` wakes it, and waking a task on another CPU is
dear (in a VM, an interprocessor interrupt and an exit to the hypervisor). Written in a
burst, the writes find the peer already awake. On a two-vCPU VM this doubled a worker's
throughput and halved its CPU per request (docs/performance.md). At low load a turn
holds a single request and nothing waits longer than the callback queue's next pass.

A connection writes its own `out` at once before it closes (`write_out`), so nothing
queued is lost or reordered, and skips it if it was aborted meanwhile.
"""

from __future__ import annotations

import asyncio


class Flusher:
    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: list = []

    def queue(self, conn) -> None:
        """Have `conn.write_out()` called after the current turn (once, however often
        `conn` is queued before then; the caller keeps `conn.queued`)."""
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.run)
        self.pending.append(conn)

    def run(self) -> None:
        pending, self.pending = self.pending, []
        for conn in pending:
            conn.write_out()
