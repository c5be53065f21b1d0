"""HTTP/1.1 codec, sans-IO: bytes in, events out; events in, bytes out.

llhttp (through httptools) does the parsing at C speed and is strict where smuggling
lives: Content-Length with Transfer-Encoding, duplicate Content-Length, Transfer-Encoding
not ending in chunked, obs-fold, bad chunk sizes, NUL or bare CR in values are all refused.
This module adds what a proxy needs on top: a bound on the header section (431), a Host
header for HTTP/1.1 (RFC 9112 3.2), hop-by-hop headers taken out (RFC 9110 7.6.1) and
framing re-derived, so what we forward is always framed by us and never by the peer.

Every malformed input raises `ProtocolError` — nothing else — whether fed whole or byte by
byte (tests/fuzz checks exactly that). No sockets, no clock, no asyncio here.
"""

from __future__ import annotations

from functools import partial
from http import HTTPStatus
from typing import NamedTuple

import httptools

from plait.core.code import copy_function
from plait.core.errors import ProtocolError, Reason

# Headers the codec looks at; everything else is passed through untouched.
(_CONNECTION, _TRANSFER_ENCODING, _UPGRADE, _EXPECT, _CONTENT_LENGTH, _HOST,
 _DROP) = range(7)

# Headers that describe one hop and must not be forwarded (RFC 9110 7.6.1, plus the
# de-facto Keep-Alive and Proxy-Connection that Envoy also strips).
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
     b"upgrade", b"trailer", b"expect")
)

_SPECIAL = {
    b"connection": _CONNECTION, b"transfer-encoding": _TRANSFER_ENCODING,
    b"upgrade": _UPGRADE, b"expect": _EXPECT, b"content-length": _CONTENT_LENGTH,
    b"host": _HOST, b"keep-alive": _DROP, b"proxy-connection": _DROP, b"te": _DROP,
    b"trailer": _DROP,
}

DEFAULT_MAX_HEADER_BYTES = 60 * 1024  # Envoy's max_request_headers_kb default


# Events. The two heads are read field by field many times per request, so they are
# classes with __slots__: CPython 3.11 reads a slot with a specialised instruction, while
# a named tuple's field is a descriptor it looks up on the type at each read (and a slotted
# class is cheaper to build than a named tuple through its Python constructor). Treat
# them as read-only. The small events stay named tuples.


class Request:
    """A request head. `headers` holds end-to-end headers with lower-case names."""

    __slots__ = ("method", "target", "http10", "headers", "host", "keep_alive", "chunked",
                 "content_length", "upgrade", "expect_continue")

    def __init__(self, method: bytes, target: bytes, http10: bool, headers: list,
                 host: bytes, keep_alive: bool, chunked: bool, content_length: int,
                 upgrade: bytes | None, expect_continue: bool) -> None:
        self.method = method
        self.target = target
        self.http10 = http10
        self.headers = headers
        self.host = host
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.content_length = content_length  # -1: none given
        self.upgrade = upgrade
        self.expect_continue = expect_continue

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {self.target!r}, host={self.host!r})"


class Response:
    """A response head; same conventions as `Request`. The reason phrase is not kept: a
    proxy sends the standard one for the status (as Envoy does)."""

    __slots__ = ("status", "headers", "keep_alive", "chunked", "content_length", "upgrade")

    def __init__(self, status: int, headers: list, keep_alive: bool, chunked: bool,
                 content_length: int, upgrade: bool) -> None:
        self.status = status
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.content_length = content_length
        self.upgrade = upgrade

    def __repr__(self) -> str:
        return f"Response({self.status})"


class Data(NamedTuple):
    data: bytes


class EndOfMessage(NamedTuple):
    trailers: list | None = None


END_OF_MESSAGE = EndOfMessage(None)  # shared: the usual end, with no trailers

# A named tuple's own constructor is a Python function; the hot path builds body events
# with tuple.__new__ directly.
_new_data = partial(tuple.__new__, Data)

# The codec builds the heads as `_new(cls)` and then sets each field itself: in CPython
# 3.11 calling a class goes through type_call and slot_tp_init in C and starts a fresh
# interpreter frame for __init__ (0.59 µs for ten fields, timed in isolation; 0.28 µs with
# `obj.__init__(...)` called from Python, which 3.11 inlines; less again without that call).
# Their __init__ is for everyone else; a test holds the codec's heads to it, field by field.
_new = object.__new__


class Upgraded(NamedTuple):
    """The connection left HTTP (101 or CONNECT): what follows are tunnel bytes."""

    data: bytes


class _Codec:
    """What request and response parsing share: header collection and limits."""

    def __init__(self, parser_type, max_header_bytes: int) -> None:
        self._parser_type = parser_type
        self._parser = parser_type(self)
        self._max = max_header_bytes
        self._events: list = []
        self.in_head = False  # part of a message head has arrived and the rest has not
        self.in_message = False  # part of a message has arrived and its end has not
        self._head_bytes = 0
        self._ended = False  # a message ended during the current receive_data
        self._upgraded = False
        # receive_data takes a detour: a tunnel (`_upgraded`), or a HEAD response expected
        # (`_head_request`, the client codec's)
        self._detour = False
        self._head_request = False
        self._count = False  # count header bytes one by one (a chunk over the limit)
        self._headers: list = []
        self._host = b""
        self._length = -1
        self._url = b""
        self._size = 0
        # Connection's values as sent, comma-joined: most messages have the header
        # (keep-alive), so reset with each message rather than among the rare fields
        self._conn_tokens = b""
        self._rare = True  # a field below may be set: reset them at the next message
        self._reset_rare()

    def _reset_rare(self) -> None:
        """Reset what most messages never set, only after one did (`_rare`)."""
        self._rare = False
        self._trailers: list | None = None
        self._chunked = False
        self._upgrade: bytes | None = None
        self._expect = False

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = self.in_head = True
        self._head_bytes = 0
        self._headers = []
        self._host = b""
        self._length = -1
        self._url = b""
        self._size = 0
        self._conn_tokens = b""
        if self._rare:
            self._reset_rare()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if self._count:
            self._size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # The hot path: one dict probe and one append for an ordinary header. Sizes are
        # counted only when a single chunk is larger than the limit: a head spread over
        # several chunks is bounded by receive_data's count of bytes fed while in a head.
        if self._count:
            size = self._size = self._size + len(name) + len(value) + 4
            if size > self._max:
                raise ProtocolError("header section too large",
                                    reason=Reason.HEADERS_TOO_LARGE)
        name = name.lower()
        kind = _SPECIAL.get(name)
        if kind is None:
            self._headers.append((name, value))  # in the trailer section: the trailers
        elif self._trailers is not None:
            return  # framing and hop-by-hop names are not trailers
        elif kind == _CONTENT_LENGTH:  # the usual ones first, without a further call
            self._length = int(value)  # llhttp validated the digits
            self._headers.append((name, value))
        elif kind == _HOST:
            if self._host:
                raise ProtocolError("duplicate Host")
            self._host = value
            self._headers.append((name, value))
        elif kind == _CONNECTION:  # lower-cased only where read (an Upgrade's check)
            self._conn_tokens += b"," + value
        else:
            self._special(kind, value)

    def _special(self, kind: int, value: bytes) -> None:
        self._rare = True
        if kind == _TRANSFER_ENCODING:
            # llhttp admits any list ending in "chunked"; we re-chunk what we forward,
            # so any other coding (gzip, chunked) would silently vanish (Envoy: 501).
            if value.strip().lower() != b"chunked":
                raise ProtocolError("unsupported transfer coding")
            self._chunked = True
        elif kind == _UPGRADE:
            self._upgrade = value
        elif kind == _EXPECT:
            if value.lower() != b"100-continue":
                raise ProtocolError("unsupported Expect")
            self._expect = True
        # other hop-by-hop headers are dropped

    def on_body(self, body: bytes) -> None:
        self._events.append(_new_data((body,)))

    def on_message_complete(self) -> None:
        self.in_message = False
        self._ended = True
        trailers = self._trailers
        self._events.append(EndOfMessage(trailers) if trailers else END_OF_MESSAGE)
        self._trailers = None

    # -- driving ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list:
        """Feed bytes; return the events they completed. Raises ProtocolError."""
        if self._detour:  # a tunnel, or a HEAD response expected: rare
            if self._upgraded:
                return [Data(data)] if data else []
            return self._head_response_data(data)
        was_in_head = self.in_head
        size = len(data)
        if was_in_head:
            self._head_bytes += size
        self._count = size > self._max
        self._ended = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded = self._detour = True
            self.in_message = False  # what follows is no message
            rest = data[upgrade.args[0]:]
            self._events.append(Upgraded(rest))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            if isinstance(cause, _HeadDone):
                self._parser = self._parser_type(self)
            else:
                raise ProtocolError(f"malformed message: {cause}") from None
        except httptools.HttpParserError as exc:
            raise ProtocolError(f"malformed message: {exc}") from None
        if self.in_head and not was_in_head and not self._ended:
            # The head began in this chunk and nothing ended before it: all of it is head.
            # (httptools holds an unfinished header line where on_header cannot count it.)
            self._head_bytes = len(data)
        if self.in_head and self._head_bytes > self._max:
            raise ProtocolError("header section too large", reason=Reason.HEADERS_TOO_LARGE)
        events, self._events = self._events, []
        return events

    def receive_eof(self) -> list:
        """The peer closed. Returns the events that completes (the end of a body delimited
        by close); raises ProtocolError when a message was cut short."""
        if self.in_message:
            self.in_message = False
            if self._close_delimited():
                return [END_OF_MESSAGE]
            raise ProtocolError("connection closed mid-message")
        return []

    def _close_delimited(self) -> bool:
        return False


class _HeadDone(Exception):
    """Stops llhttp after a head with no body that llhttp cannot know of (HEAD)."""


class Http1ServerCodec(_Codec):
    """Parses requests from a downstream client."""

    def __init__(self, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> None:
        super().__init__(httptools.HttpRequestParser, max_header_bytes)

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self._parser
        keep_alive = parser.should_keep_alive()
        if keep_alive and not self._conn_tokens:
            # Of the versions llhttp takes (0.9, 1.0, 1.1, 2.0) only 1.1 keeps a connection
            # alive without a Connection header; get_http_version() formats a string.
            http10 = False
        else:
            version = parser.get_http_version()
            if version not in ("1.0", "1.1"):
                # llhttp reads "GET /" as HTTP/0.9 even with headers after it: a peer that
                # ends the request at the first line would see the rest as a second one.
                raise ProtocolError(f"unsupported HTTP version {version}")
            http10 = version == "1.0"
        if http10 and self._chunked:
            raise ProtocolError("Transfer-Encoding in HTTP/1.0")  # RFC 9112 6.1: faulty framing
        method = parser.get_method()
        if not http10 and not self._host:
            raise ProtocolError("HTTP/1.1 request without Host")
        if method == b"CONNECT":
            raise ProtocolError("CONNECT is not supported")
        upgrade = self._upgrade
        if upgrade is not None and b"upgrade" not in self._conn_tokens.lower():
            upgrade = None
        # Request(...), without the class call and the __init__ call: see _new
        req = _new(Request)
        req.method = method
        req.target = self._url
        req.http10 = http10
        req.headers = self._headers
        req.host = self._host
        req.keep_alive = keep_alive
        req.chunked = self._chunked
        req.content_length = self._length
        req.upgrade = upgrade
        req.expect_continue = self._expect
        self._events.append(req)
        if self._chunked:
            self._headers = self._trailers = []


class Http1ClientCodec(_Codec):
    """Parses responses from an upstream server. Call `expect_head_response()` before
    the response to a HEAD request, whose Content-Length announces no body."""

    def __init__(self, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> None:
        super().__init__(httptools.HttpResponseParser, max_header_bytes)
        self._carry = b""  # the last bytes fed while a HEAD response is expected

    def expect_head_response(self) -> None:
        self._head_request = self._detour = True
        self._carry = b""

    def _head_response_data(self, data: bytes) -> list:
        # llhttp is stopped where a HEAD response's head ends and the rest of its input
        # is lost; so feed it up to each empty line (the only place a head can end) and
        # parse what follows the head as what it is, whichever way the bytes were cut.
        carry = len(self._carry)
        buf = self._carry + data
        self._carry = buf[-3:]
        events: list = []
        start = 0
        end = buf.find(b"\r\n\r\n")
        self._detour = False  # each piece is fed the usual way (or as a tunnel's)
        try:
            while end >= 0:
                cut = end + 4 - carry
                if cut > start:
                    events += self.receive_data(data[start:cut])
                    start = cut
                end = buf.find(b"\r\n\r\n", end + 1)
            if start < len(data):
                events += self.receive_data(data[start:])
        finally:
            self._detour = self._head_request or self._upgraded
        return events

    def _close_delimited(self) -> bool:
        status = self._parser.get_status_code()
        return (not self.in_head and not self._chunked and self._length < 0
                and status >= 200 and status not in (204, 304))

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self._parser
        status = parser.get_status_code()
        keep_alive = parser.should_keep_alive()
        upgrade = status == 101 and self._upgrade is not None
        resp = _new(Response)  # Response(...), as in the server codec
        resp.status = status
        resp.headers = self._headers
        resp.keep_alive = keep_alive
        resp.chunked = self._chunked
        resp.content_length = self._length
        resp.upgrade = upgrade
        self._events.append(resp)
        if self._chunked:
            self._headers = self._trailers = []
        if self._head_request and status >= 200:
            self._head_request = False
            self.in_message = False
            self._events.append(END_OF_MESSAGE)
            raise _HeadDone()


# -- encoding -------------------------------------------------------------------------

CRLF = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def encode_headers(headers: list) -> bytes:
    """Header lines, each ending in CRLF (empty for no headers)."""
    if not headers:
        return b""
    return b"\r\n".join(map(b": ".join, headers)) + b"\r\n"


def encode_request_head(method: bytes, target: bytes, headers: list, framing: bytes) -> bytes:
    """Request line and headers. `framing` is extra header lines (ending in CRLF) such as
    b"transfer-encoding: chunked\r\n"; the blank line is added here."""
    if not headers:
        return b"%s %s HTTP/1.1\r\n%s\r\n" % (method, target, framing)
    return b"%s %s HTTP/1.1\r\n%s\r\n%s\r\n" % (
        method, target, b"\r\n".join(map(b": ".join, headers)), framing)


def encode_response_head(status: int, headers: list, framing: bytes) -> bytes:
    """Status line (with the standard reason phrase: like Envoy, the upstream's own phrase
    is not forwarded) and headers."""
    line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status
    if not headers:
        return b"%s%s\r\n" % (line, framing)
    return b"%s%s\r\n%s\r\n" % (line, b"\r\n".join(map(b": ".join, headers)), framing)


_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode())
                 for s in HTTPStatus}


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def encode_last_chunk(trailers: list | None) -> bytes:
    if not trailers:
        return LAST_CHUNK
    return b"0\r\n%s\r\n" % encode_headers(trailers)


def _own_code(cls: type, names: tuple) -> None:
    """Give `cls` its own copy of the methods it inherits under `names`: the two codecs
    would otherwise share their code and miss their specialisations about half the time
    (plait.core.code)."""
    for name in names:
        setattr(cls, name, copy_function(getattr(cls, name), name, f"{cls.__name__}.{name}"))


for _cls in (Http1ServerCodec, Http1ClientCodec):
    _own_code(_cls, ("receive_data", "on_message_begin", "on_header", "on_body",
                     "on_message_complete"))
