"""The server side of the HTTP/1.1 codec: requests parsed alike whole and byte by byte.

Every valid message here is fed three ways (whole, one byte at a time, cut in three) and
must give the same canonical events; then each test checks what those events say.
"""

from __future__ import annotations

import pytest

from plait.codec.http1 import (
    Http1ServerCodec, Request, encode_chunk, encode_last_chunk, encode_request_head,
)
from plait.core.errors import ProtocolError
from plait.testing.codec import bytewise, canonical, feed, split_at


def parse(data: bytes, *, eof: bool = False) -> list[tuple]:
    """Canonical events of `data`, checked to be the same whichever way it is cut."""
    whole = canonical(feed(Http1ServerCodec(), [data], eof=eof))
    for chunks in (bytewise(data), split_at(data, (len(data) // 3, 2 * len(data) // 3))):
        assert canonical(feed(Http1ServerCodec(), chunks, eof=eof)) == whole
    return whole


def test_simple_get():
    events = parse(b"GET /a?b=c HTTP/1.1\r\nHost: svc.local\r\nAccept: */*\r\n\r\n")
    assert events == [
        ("request", b"GET", b"/a?b=c", False, ((b"host", b"svc.local"), (b"accept", b"*/*")),
         b"svc.local", True, False, -1, None, False),
        ("end", ()),
    ]


def test_header_names_are_lowered_and_values_kept():
    [req, _] = parse(b"GET / HTTP/1.1\r\nHOST: h\r\nX-Mixed-Case: VaLuE\r\n\r\n")
    assert (b"x-mixed-case", b"VaLuE") in req[4]


def test_content_length_body():
    events = parse(b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world")
    assert events[0][8] == 11 and events[0][7] is False
    assert (b"content-length", b"11") in events[0][4]  # end to end: kept
    assert events[1:] == [("data", b"hello world"), ("end", ())]


def test_chunked_body_with_trailers_and_extensions():
    data = (b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: abc\r\nConnection: x\r\n\r\n")
    events = parse(data)
    req = events[0]
    assert req[7] is True and req[8] == -1
    assert all(name != b"transfer-encoding" for name, _ in req[4])  # framing is ours
    # The hop-by-hop `connection` in the trailer section is not passed on.
    assert events[1:] == [("data", b"hello world"), ("end", ((b"x-sum", b"abc"),))]


def test_hop_by_hop_headers_are_removed_and_remembered():
    [req, _] = parse(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, x-foo\r\n"
                     b"Keep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nX-Ok: 1\r\n\r\n")
    assert [n for n, _ in req[4]] == [b"host", b"x-ok"]
    assert req[6] is True


def test_connection_close_means_not_keep_alive():
    [req, _] = parse(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert req[6] is False


def test_pipelined_requests_come_out_in_order():
    one = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
    two = b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    three = b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n"
    events = parse(one + two + three)
    assert [e[2] if e[0] == "request" else e[0] for e in events] == [
        b"/1", "end", b"/2", "data", "end", b"/3", "end"]


def test_http10_needs_no_host_and_closes_by_default():
    [req, _] = parse(b"GET /old HTTP/1.0\r\n\r\n")
    assert req[3] is True and req[5] == b"" and req[6] is False


def test_http10_keep_alive_when_asked():
    [req, _] = parse(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert req[3] is True and req[6] is True


def test_expect_100_continue_is_noted_and_removed():
    [req, *_] = parse(b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 2\r\n\r\nok")
    assert req[10] is True
    assert all(n != b"expect" for n, _ in req[4])


def test_upgrade_turns_the_rest_into_tunnel_bytes():
    data = (b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            b"\x81\x05hello GET / HTTP/1.1\r\n\r\n")
    events = parse(data)
    assert events[0][9] == b"websocket"
    assert events[1:] == [("end", ()), ("tunnel", b"\x81\x05hello GET / HTTP/1.1\r\n\r\n")]


def test_upgrade_header_without_connection_upgrade_is_plain_http():
    events = parse(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"
                   b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert events[0][9] is None
    assert [e[0] for e in events] == ["request", "end", "request", "end"]


def test_connection_upgrade_of_one_request_is_not_carried_to_the_next():
    events = parse(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\r\n"
                   b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
    assert [e[0] for e in events] == ["request", "end", "request", "end"]
    assert events[2][9] is None  # the second request's Upgrade lacks its own Connection


def test_eof_between_requests_is_clean():
    codec = Http1ServerCodec()
    assert len(feed(codec, [b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"], eof=True)) == 2


@pytest.mark.parametrize("cut", [
    b"GET / HTTP/1.1\r\nHost:",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
])
def test_eof_inside_a_request_is_a_protocol_error(cut):
    with pytest.raises(ProtocolError):
        feed(Http1ServerCodec(), [cut], eof=True)


def test_in_head_tracks_a_partial_head():
    codec = Http1ServerCodec()
    assert not codec.in_head
    codec.receive_data(b"GET / HT")
    assert codec.in_head
    codec.receive_data(b"TP/1.1\r\nHost: h\r\n\r\n")
    assert not codec.in_head


def test_encoded_request_parses_back_to_the_same_message():
    head = encode_request_head(b"POST", b"/p", [(b"host", b"h"), (b"x-a", b"1")],
                               b"transfer-encoding: chunked\r\n")
    wire = head + encode_chunk(b"abc") + encode_chunk(b"de") + encode_last_chunk(
        [(b"x-t", b"9")])
    events = parse(wire)
    assert events[0][4] == ((b"host", b"h"), (b"x-a", b"1"))
    assert events[1:] == [("data", b"abcde"), ("end", ((b"x-t", b"9"),))]


def test_the_codec_sets_every_field_of_a_request_head_as_its_constructor_does():
    # The codec sets the fields one by one instead of calling Request.__init__.
    [req, _] = feed(Http1ServerCodec(), [b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"])
    built = Request(b"GET", b"/x", False, [(b"host", b"h")], b"h", True, False, -1, None,
                    False)
    assert {f: getattr(req, f) for f in Request.__slots__} == {
        f: getattr(built, f) for f in Request.__slots__}
