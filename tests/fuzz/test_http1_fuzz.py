"""Any bytes fed to the HTTP/1.1 codec either parse or raise ProtocolError, never anything
else, and how the bytes are cut never changes the outcome (h11's fuzzing rule).

Two feeds per side: arbitrary bytes, and mutations of valid messages (the inputs that get
past the first line and reach the header, framing and body logic).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.codec.http1 import Http1ClientCodec, Http1ServerCodec
from plait.core.errors import ProtocolError
from plait.testing.codec import canonical, feed, split_at

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REQUESTS = [
    b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;x=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nraw",
    b"PUT /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-S: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nxx",
    b"HTTP/1.0 200 OK\r\n\r\nclose delimited",
    b"HTTP/1.1 200 OK\r\nServer: s\r\nConnection: keep-alive\r\nKEEP-ALIVE: t=5\r\n"
    b"X-A: 1\r\nContent-Length: 2\r\nTrailer: x\r\n\r\nok",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
]
TOKENS = [b"\r\n", b"\r", b"\n", b"\x00", b" ", b":", b";", b",", b"0", b"\r\n\r\n",
          b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"Host: x\r\n",
          b"Connection: close\r\n", b"ffffffffffffffff", b"\t", b"\xff", b"HTTP/1.1"]


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "truncate"]))
        if op == "insert":
            data[pos:pos] = draw(st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "replace" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "duplicate":
            end = min(len(data), pos + draw(st.integers(1, 40)))
            data[pos:pos] = data[pos:end]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def outcome(make, chunks: list[bytes], eof: bool):
    """("ok", canonical events) or ("error", reason); anything else escapes the test."""
    try:
        return "ok", canonical(feed(make(), chunks, eof=eof))
    except ProtocolError as exc:
        return "error", exc.reason


def check(make, data: bytes, cuts: list[int], eof: bool) -> None:
    whole = outcome(make, [data], eof)
    pieces = outcome(make, split_at(data, cuts), eof)
    assert pieces == whole, (data, cuts)


def head_client() -> Http1ClientCodec:
    codec = Http1ClientCodec()
    codec.expect_head_response()
    return codec


cuts = st.lists(st.integers(0, 400), max_size=12)


@FUZZ
@given(data=st.binary(max_size=300), cuts=cuts, eof=st.booleans())
def test_server_codec_any_bytes(data, cuts, eof):
    check(Http1ServerCodec, data, cuts, eof)


@FUZZ
@given(data=mutated(REQUESTS), cuts=cuts, eof=st.booleans())
def test_server_codec_mutated_requests(data, cuts, eof):
    check(Http1ServerCodec, data, cuts, eof)


@FUZZ
@given(data=st.binary(max_size=300), cuts=cuts, eof=st.booleans())
def test_client_codec_any_bytes(data, cuts, eof):
    check(Http1ClientCodec, data, cuts, eof)


@FUZZ
@given(data=mutated(RESPONSES), cuts=cuts, eof=st.booleans(), head=st.booleans())
def test_client_codec_mutated_responses(data, cuts, eof, head):
    check(head_client if head else Http1ClientCodec, data, cuts, eof)


@FUZZ
@given(data=mutated(REQUESTS), limit=st.integers(8, 200))
def test_server_codec_small_header_limit_byte_by_byte(data, limit):
    # A tight limit reaches the 431 path from every position in the head.
    try:
        feed(Http1ServerCodec(max_header_bytes=limit), [data[i:i + 1] for i in range(len(data))])
    except ProtocolError:
        pass
