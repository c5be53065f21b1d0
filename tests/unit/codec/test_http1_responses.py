"""The client side of the HTTP/1.1 codec: responses from an upstream, whole and byte by byte.

Responses need what requests do not: a HEAD response whose Content-Length announces no
body, 1xx interim responses, 101 and a tunnel, and bodies delimited by the peer's close.
"""

from __future__ import annotations

import pytest

from plait.codec.http1 import Http1ClientCodec, Http1ServerCodec, Response, encode_response_head
from plait.core.errors import ProtocolError
from plait.testing.codec import bytewise, canonical, feed, split_at


def parse(data: bytes, *, eof: bool = False, head: bool = False) -> list[tuple]:
    results = []
    for chunks in ([data], bytewise(data), split_at(data, (7, len(data) // 2))):
        codec = Http1ClientCodec()
        if head:
            codec.expect_head_response()
        results.append(canonical(feed(codec, chunks, eof=eof)))
    assert results[0] == results[1] == results[2]
    return results[0]


def test_content_length_response():
    events = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
    assert events == [
        ("response", 200, ((b"content-length", b"5"), (b"x-a", b"b")), True, False, 5,
         False),
        ("data", b"hello"), ("end", ())]


def test_chunked_response_with_trailers():
    events = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n"
                   b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n")
    assert events[0][4] is True and events[0][2] == ()  # trailer/TE are hop-by-hop
    assert events[1:] == [("data", b"abcde"), ("end", ((b"x-sum", b"5"),))]


def test_head_response_has_no_body_and_the_next_response_still_parses():
    codec = Http1ClientCodec()
    codec.expect_head_response()
    first = canonical(feed(codec, [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"]))
    assert first[0][5] == 1000 and first[1:] == [("end", ())]
    second = canonical(feed(codec, [b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"]))
    assert second[0][1] == 201 and second[1:] == [("data", b"ok"), ("end", ())]


def test_head_response_byte_by_byte():
    events = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", head=True)
    assert [e[0] for e in events] == ["response", "end"]


def test_interim_responses_come_before_the_final_one():
    events = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    assert [(e[0], e[1] if e[0] == "response" else None) for e in events] == [
        ("response", 100), ("end", None), ("response", 103), ("end", None),
        ("response", 200), ("data", None), ("end", None)]


def test_no_body_statuses():
    events = parse(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n")
    assert [e[0] for e in events] == ["response", "end", "response", "end"]


def test_101_switches_to_a_tunnel():
    events = parse(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                   b"Upgrade: websocket\r\n\r\n\x81\x02hi")
    assert events[0][1] == 101 and events[0][6] is True
    assert events[-1] == ("tunnel", b"\x81\x02hi")


def test_101_to_a_head_request_switches_to_a_tunnel_too():
    # The HEAD detour (feeding up to each empty line) hands over to the tunnel's mid-chunk.
    events = parse(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                   b"Upgrade: websocket\r\n\r\n\x81\x02hi\r\n\r\nmore", head=True)
    assert events[0][1] == 101 and events[0][6] is True
    assert events[-1] == ("tunnel", b"\x81\x02hi\r\n\r\nmore")


def test_close_delimited_body_ends_at_eof():
    events = parse(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nevery byte until close", eof=True)
    assert events[0][3] is False and events[0][5] == -1
    assert events[1:] == [("data", b"every byte until close"), ("end", ())]


def test_http11_response_without_length_is_close_delimited_too():
    events = parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc", eof=True)
    assert events[1:] == [("data", b"abc"), ("end", ())]


@pytest.mark.parametrize("cut", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Le",
])
def test_eof_inside_a_framed_response_is_a_protocol_error(cut):
    with pytest.raises(ProtocolError):
        feed(Http1ClientCodec(), [cut], eof=True)


def test_keep_alive_follows_version_and_connection_header():
    [r10, *_] = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    [r11, *_] = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    [rclose, *_] = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert (r10[3], r11[3], rclose[3]) == (False, True, False)


def test_encoded_response_parses_back():
    wire = encode_response_head(404, [(b"x-a", b"1")], b"content-length: 3\r\n")
    events = parse(wire + b"nop")
    assert events[0][1:3] == (404, ((b"x-a", b"1"), (b"content-length", b"3")))
    assert events[1:] == [("data", b"nop"), ("end", ())]


@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_bytes_after_a_head_response_are_read_as_the_next_response(how):
    # An upstream that sends a body after HEAD: the bytes are not silently dropped in one
    # split and parsed in another; they are the (here malformed) next response either way.
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    codec = Http1ClientCodec()
    codec.expect_head_response()
    with pytest.raises(ProtocolError):
        feed(codec, [data] if how == "whole" else bytewise(data))


def test_in_message_tells_a_finished_response_from_one_under_way():
    codec = Http1ClientCodec()
    feed(codec, [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    assert not codec.in_message
    feed(codec, [b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nabc"])
    assert codec.in_message and not codec.in_head


def test_each_codec_runs_its_own_code_for_the_callbacks_both_use():
    # CPython 3.11 specialises attribute access in a code object for one type: code shared
    # by the request and the response codec would miss there half the time.
    for name in ("receive_data", "on_message_begin", "on_header", "on_body",
                 "on_message_complete"):
        server, client = getattr(Http1ServerCodec, name), getattr(Http1ClientCodec, name)
        assert server.__code__ is not client.__code__
        assert server.__code__.co_code == client.__code__.co_code


def test_the_codec_sets_every_field_of_a_response_head_as_its_constructor_does():
    # The codec sets the fields one by one instead of calling Response.__init__.
    [resp, *_] = feed(Http1ClientCodec(), [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    built = Response(200, [(b"content-length", b"0")], True, False, 0, False)
    assert {f: getattr(resp, f) for f in Response.__slots__} == {
        f: getattr(built, f) for f in Response.__slots__}
