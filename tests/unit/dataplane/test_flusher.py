"""The flusher: writes queued during one event-loop turn go out after it, once per
connection, in the order they were sent; a closed connection's queue is dropped. While the
load is sparse (turns with a single writer), it writes at once and looks again now and then."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from plait.dataplane.flusher import DIRECT_WRITES, SPARSE_TURNS, Flusher
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
        assert a.transport.writes == [b"12", b"3"] and flusher.pending == ([], [])

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


async def _sparse_turns(flusher: Flusher, conn: UpstreamConnection) -> None:
    """Turns with `conn` the only writer, until the flusher writes at once."""
    for _ in range(SPARSE_TURNS):
        assert not flusher.direct
        flusher.send(conn, b".")
        await _turn()


def test_after_turns_with_a_single_writer_writes_go_out_at_once():
    async def main():
        flusher = Flusher()
        conn = connection()
        await _sparse_turns(flusher, conn)
        assert flusher.direct and conn.transport.writes == [b"."] * SPARSE_TURNS
        flusher.send(conn, b"now")
        assert conn.transport.writes[-1] == b"now" and flusher.pending == ([], [])
        conn.close()
        flusher.send(conn, b"late")  # closed: dropped, as when gathered
        assert conn.transport.writes[-1] == b"now" and conn.out == []

    asyncio.run(main())


def test_writing_at_once_stops_to_look_and_a_busy_turn_brings_the_gathering_back():
    async def main():
        flusher = Flusher()
        a, b = connection(), connection()
        await _sparse_turns(flusher, a)
        for _ in range(DIRECT_WRITES):
            flusher.send(a, b"1")
        assert not flusher.direct  # the budget is spent: the next turn gathers to look
        flusher.send(a, b"2")
        assert a.transport.writes[-1] == b"1"
        await _turn()  # a single writer: at once again, at once
        assert flusher.direct and a.transport.writes[-1] == b"2"
        for _ in range(DIRECT_WRITES):
            flusher.send(a, b"3")
        flusher.send(a, b"4")
        flusher.send(b, b"x")  # two writers in the looked-at turn: gathering stays
        await _turn()
        assert not flusher.direct and (a.transport.writes[-1], b.transport.writes) == (b"4", [b"x"])
        flusher.send(a, b"5")
        assert a.transport.writes[-1] == b"4"  # gathered until the turn ends
        await _turn()
        assert not flusher.direct and a.transport.writes[-1] == b"5"  # one sparse turn of four

    asyncio.run(main())


def test_each_kind_of_connection_queues_through_its_own_copy_of_the_code():
    # One copy per kind keeps CPython's attribute specialisations (plait.core.code).
    up, down = Flusher.queue_upstream.__code__, Flusher.queue_downstream.__code__
    assert up is not down and up is not Flusher.queue.__code__
    assert up.co_code == down.co_code == Flusher.queue.__code__.co_code

    async def main():
        flusher = Flusher()
        a, b = connection(), connection()  # either kind works with either copy
        a.out.append(b"to upstream")
        b.out.append(b"to downstream")
        flusher.queue_upstream(a)
        flusher.queue_downstream(b)
        flusher.queue_downstream(b)  # once per turn
        assert flusher.pending == ([a], [b])
        await _turn()
        assert (a.transport.writes, b.transport.writes) == ([b"to upstream"], [b"to downstream"])
        assert flusher.pending == ([], []) and not a.queued and not b.queued

    asyncio.run(main())
