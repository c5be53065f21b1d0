"""Drive the sans-IO HTTP/1.1 codec in tests: feed bytes in any split, compare events.

Why: a codec must produce the same messages whether bytes arrive whole, byte by byte or
in random pieces (h11's rule). Events themselves differ in how a body is cut into `Data`,
so tests compare a canonical form instead.

How: `feed(codec, chunks, eof=...)` returns the events of every chunk (and of the peer's
close); `canonical(events)` turns them into plain tuples, with adjacent body pieces joined
and everything after an `Upgraded` joined into one ("tunnel", bytes) entry.
"""

from __future__ import annotations

from typing import Iterable

from plait.codec.http1 import Data, EndOfMessage, Request, Response, Upgraded


def feed(codec, chunks: Iterable[bytes], *, eof: bool = False) -> list:
    """All events from feeding `chunks` in order (then EOF, if asked). ProtocolError
    propagates."""
    events: list = []
    for chunk in chunks:
        events += codec.receive_data(chunk)
    if eof:
        events += codec.receive_eof()
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """`data` cut at the given offsets (any order, duplicates and out-of-range ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def canonical(events: list) -> list[tuple]:
    out: list[tuple] = []
    tunnel = None
    for ev in events:
        if tunnel is not None:
            tunnel += ev.data
            continue
        kind = type(ev)
        if kind is Request:
            out.append(("request", ev.method, ev.target, ev.http10, tuple(ev.headers), ev.host,
                        ev.keep_alive, ev.chunked, ev.content_length, ev.upgrade,
                        ev.expect_continue))
        elif kind is Response:
            out.append(("response", ev.status, tuple(ev.headers), ev.keep_alive,
                        ev.chunked, ev.content_length, ev.upgrade))
        elif kind is Data:
            if out and out[-1][0] == "data":
                out[-1] = ("data", out[-1][1] + ev.data)
            elif ev.data:
                out.append(("data", ev.data))
        elif kind is EndOfMessage:
            out.append(("end", tuple(ev.trailers) if ev.trailers else ()))
        elif kind is Upgraded:
            tunnel = ev.data
        else:
            raise AssertionError(f"unknown event {ev!r}")
    if tunnel is not None:
        out.append(("tunnel", tunnel))
    return out
