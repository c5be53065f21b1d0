"""Hostile HTTP/1.1: every smuggling shape and limit breach is a ProtocolError with the
reason the sidecar turns into a status (400, 431), whole or byte by byte, never a crash."""

from __future__ import annotations

import pytest

from plait.codec.http1 import Http1ClientCodec, Http1ServerCodec
from plait.core.errors import ProtocolError, Reason
from plait.testing.codec import bytewise, feed

H = b"Host: h\r\n"
SMUGGLING = {
    "cl and te": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te and cl": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
                 b"Content-Length: 4\r\n\r\n0\r\n\r\n",
    "two content-lengths": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n"
                           b"Content-Length: 5\r\n\r\nabcde",
    "content-length list": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc",
    "te not ending in chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, "
                                b"gzip\r\n\r\n0\r\n\r\n",
    "te identity": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\nabc",
    # Forwarded re-chunked, a gzip coding would silently vanish (Envoy answers 501).
    "te gzip then chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, "
                            b"chunked\r\n\r\n0\r\n\r\n",
    "te split over two lines": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
    "te on http/1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: one\r\n two\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\n" + H + b"Content-Length : 3\r\n\r\nabc",
    "bad chunk size": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                      b"xyz\r\nabc\r\n0\r\n\r\n",
    "chunk size overflow": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                           b"fffffffffffffffffff\r\nabc\r\n",
    "chunk without crlf": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabcX0\r\n\r\n",
    "nul in value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "bare cr in value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n",
    "bare lf line ends": b"GET / HTTP/1.1\n" + H + b"\n",
    "negative content-length": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    "content-length overflow": b"POST / HTTP/1.1\r\n" + H
                               + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "missing host on 1.1": b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    # HTTP/0.9 has no headers: a peer that reads "GET /" as a whole request would
    # read the rest as a second one.
    "http/0.9 with headers": b"GET /\r\n" + H + b"\r\n",
    "http/2.0 request line": b"GET / HTTP/2.0\r\n" + H + b"\r\n",
    "http/2.0 keeping alive": b"GET / HTTP/2.0\r\nConnection: keep-alive\r\n" + H + b"\r\n",
    "http/0.9 keeping alive": b"GET /\r\nConnection: keep-alive\r\n" + H + b"\r\n",
    "connect": b"CONNECT h:443 HTTP/1.1\r\n" + H + b"\r\n",
    "unknown expectation": b"GET / HTTP/1.1\r\n" + H + b"Expect: magic\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
}


@pytest.mark.parametrize("data", SMUGGLING.values(), ids=SMUGGLING.keys())
@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_smuggling_shapes_are_bad_requests(data, how):
    chunks = [data] if how == "whole" else bytewise(data)
    with pytest.raises(ProtocolError) as info:
        feed(Http1ServerCodec(), chunks, eof=True)
    assert info.value.reason is Reason.BAD_REQUEST


LIMIT = 1024
OVERSIZE = {
    "many headers": b"GET / HTTP/1.1\r\n" + H + b"".join(
        b"X-%d: %s\r\n" % (i, b"v" * 20) for i in range(60)) + b"\r\n",
    "one long value": b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 2000 + b"\r\n\r\n",
    "long target": b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n" + H + b"\r\n",
    "head never ends": b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 2000,
}


@pytest.mark.parametrize("data", OVERSIZE.values(), ids=OVERSIZE.keys())
@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_header_section_over_the_limit_is_headers_too_large(data, how):
    chunks = [data] if how == "whole" else bytewise(data)
    with pytest.raises(ProtocolError) as info:
        feed(Http1ServerCodec(max_header_bytes=LIMIT), chunks)
    assert info.value.reason is Reason.HEADERS_TOO_LARGE


def test_header_section_just_under_the_limit_is_accepted():
    data = b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 900 + b"\r\n\r\n"
    assert len(data) < LIMIT
    assert len(feed(Http1ServerCodec(max_header_bytes=LIMIT), bytewise(data))) == 2


def test_the_limit_applies_to_each_request_not_the_connection():
    one = b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 600 + b"\r\n\r\n"
    codec = Http1ServerCodec(max_header_bytes=LIMIT)
    assert len(feed(codec, [one] * 5)) == 10


RESPONSES = {
    "cl and te": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    "two content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "bad status line": b"HTTP/1.1 2x0 OK\r\n\r\n",
    "not http": b"SSH-2.0-OpenSSH_9.2\r\n",
    "bad chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n",
    "nul in value": b"HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n",
}


@pytest.mark.parametrize("data", RESPONSES.values(), ids=RESPONSES.keys())
def test_malformed_responses_are_protocol_errors(data):
    for chunks in ([data], bytewise(data)):
        with pytest.raises(ProtocolError):
            feed(Http1ClientCodec(), chunks, eof=True)


def test_oversized_response_head_is_refused():
    data = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"v" * 3000 + b"\r\n\r\n"
    with pytest.raises(ProtocolError) as info:
        feed(Http1ClientCodec(max_header_bytes=LIMIT), bytewise(data))
    assert info.value.reason is Reason.HEADERS_TOO_LARGE


def test_a_large_body_before_the_next_head_is_not_counted_as_head():
    body = b"b" * 5000
    data = (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5000\r\n\r\n" + body
            + b"GET /next HTTP/1.1\r\nHo")
    codec = Http1ServerCodec(max_header_bytes=LIMIT)
    assert len(feed(codec, [data])) == 3  # request, data, end; the next head waits
    assert codec.in_head
