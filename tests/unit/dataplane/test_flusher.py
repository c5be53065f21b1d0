"""The flusher: writes queued during one event-loop turn go out after it, once per
connection, in the order they were sent; a closed connection's queue is dropped."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from plait.dataplane.flusher import Flusher
from plait.dataplane.upstream.connection import UpstreamConnection


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def abort(self) -> None:
        self.aborted = True


def connection() -> UpstreamConnection:
    conn = UpstreamConnection(SimpleNamespace(cx_active=0))
    conn.connection_made(Transport())
    return conn


async def _turn() -> None:
    """Let the loop run the callbacks already scheduled (the flusher's among them)."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


def test_writes_wait_for_the_end_of_the_turn_and_go_out_once_per_connection():
    async def main():
        flusher = Flusher()
        a, b = connection(), connection()
        flusher.send(a, b"1")
        flusher.send(b, b"x")
        flusher.send(a, b"2")
        assert a.transport.writes == b.transport.writes == []  # nothing inside the turn
        await _turn()
        assert (a.transport.writes, b.transport.writes) == ([b"12"], [b"x"])
        flusher.send(a, b"3")  # a later turn queues again
        await _turn()
        assert a.transport.writes == [b"12", b"3"] and flusher.pending == []

    asyncio.run(main())


def test_a_connection_closed_before_the_end_of_the_turn_writes_nothing():
    async def main():
        flusher = Flusher()
        conn = connection()
        flusher.send(conn, b"request")
        conn.close()
        await _turn()
        assert conn.transport.writes == [] and conn.transport.aborted

    asyncio.run(main())
