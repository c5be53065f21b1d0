"""Hostile and broken peers over raw sockets: smuggling shapes, oversized and slow heads,
too many connections, an upstream dying mid-response, and thousands of aborted
connections. The sidecar answers with a status and closes, counts it, and keeps serving
everyone else without leaking file descriptors or memory."""

from __future__ import annotations

import json
import os
import socket
import struct
import time

import pytest

from plait.testing import sidecar as sc
from plait.testing.wire import Conn

pytestmark = pytest.mark.timeout(90)
HEADER_TIMEOUT = 1.0
SWEEP_SLACK = 1.5  # the header deadline is enforced by a sweep every 0.5 s


@pytest.fixture(scope="module")
def proxy():
    with sc.upstreams("a") as ups:
        routes = [sc.virtual_host("all", ["*"], [sc.route("a")])]
        config = sc.bootstrap(
            listeners=[sc.listener("outbound", routes, max_request_headers_kb=8,
                                   request_headers_timeout=HEADER_TIMEOUT),
                       sc.listener("limited", routes, connection_limit=3)],
            clusters=[sc.cluster("a", [ups["a"].port])])
        with sc.start_sidecar(config) as sidecar:
            yield sidecar


def assert_serves(proxy) -> None:
    with Conn(proxy.listener()) as c:
        c.request("GET", "/echo/still-here")
        assert json.loads(c.reply().body)["path"] == "/echo/still-here"


H = b"Host: h\r\n"
SMUGGLING = {
    "cl and te": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "two content-lengths": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n"
                           b"Content-Length: 5\r\n\r\nabcde",
    "te gzip, chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n"
                        b"\r\n0\r\n\r\n",
    "te not chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n"
                      b"\r\n0\r\n\r\n",
    "te on http/1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    "bad chunk size": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                      b"-1\r\nabc\r\n",
    "nul in value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "missing host": b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    "http/0.9 with headers": b"GET /\r\n" + H + b"\r\n",
}


@pytest.mark.parametrize("data", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggling_shapes_get_400_and_a_closed_connection(proxy, data):
    with Conn(proxy.listener()) as c:
        c.send(data)
        reply = c.reply()
        assert reply.status == 400 and reply.header("x-plait-error") == "bad_request"
        assert reply.header("connection") == "close"
        assert c.closed()


def test_smuggling_is_counted_and_the_sidecar_keeps_serving(proxy):
    before = proxy.stats().value("plait_downstream_protocol_error_total", reason="bad_request")
    with Conn(proxy.listener()) as c:
        c.send(SMUGGLING["cl and te"])
        assert c.reply().status == 400
    after = proxy.stats().value("plait_downstream_protocol_error_total", reason="bad_request")
    assert after - before == 1
    assert_serves(proxy)


@pytest.mark.parametrize("finished", [True, False], ids=["complete", "unfinished"])
def test_headers_over_the_limit_get_431(proxy, finished):
    head = b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 9000
    with Conn(proxy.listener()) as c:
        c.send(head + (b"\r\n\r\n" if finished else b""))
        reply = c.reply()
        assert reply.status == 431 and reply.header("x-plait-error") == "headers_too_large"
        assert c.closed()


def test_headers_just_under_the_limit_pass(proxy):
    with Conn(proxy.listener()) as c:
        c.request("GET", "/echo", headers={"X-Big": "v" * 7000})
        assert c.reply().status == 200


def test_a_head_not_finished_in_time_gets_408(proxy):
    with Conn(proxy.listener(), timeout=HEADER_TIMEOUT + SWEEP_SLACK + 1) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: h\r\nX-Slow: ")
        reply = c.reply(timeout=HEADER_TIMEOUT + SWEEP_SLACK)
        assert reply.status == 408 and reply.header("x-plait-error") == "request_headers_timeout"
        assert c.closed()


def test_an_idle_keep_alive_connection_is_not_a_slow_head(proxy):
    with Conn(proxy.listener()) as c:
        c.request("GET", "/echo")
        assert c.reply().status == 200
        # Nothing more is sent: no 408 may come within the header deadline and its slack.
        assert not c.closed(timeout=HEADER_TIMEOUT + SWEEP_SLACK)
        c.request("GET", "/echo")
        assert c.reply().status == 200


def test_connection_limit_closes_extra_connections_and_counts_them(proxy):
    address = proxy.listener("limited")
    before = proxy.stats().value("plait_downstream_cx_overflow_total", listener="limited")
    held = [Conn(address) for _ in range(3)]
    try:
        for c in held:  # each of the three is accepted and served
            c.request("GET", "/echo")
            assert c.reply().status == 200
        with Conn(address) as extra:
            assert extra.closed(timeout=3)
        after = proxy.stats().value("plait_downstream_cx_overflow_total", listener="limited")
        assert after - before == 1
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the freed slot is usable once the sidecar has seen the close
            with Conn(address) as c:
                try:
                    c.request("GET", "/echo")
                    if c.reply().status == 200:
                        break
                except (ConnectionError, OSError, ValueError):
                    pass
            assert time.monotonic() < deadline, "a freed connection slot never came back"
    finally:
        for c in held:
            c.close()


def test_upstream_dying_mid_response_truncates_and_closes(proxy):
    before = proxy.stats().value("plait_upstream_rq_reset_total", cluster="a")
    with Conn(proxy.listener()) as c:
        c.request("GET", "/close-mid-body")
        raw = c.read_until_close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 1000" in head.lower()
    assert body == b"x" * 10  # the client sees a body shorter than announced, then EOF
    assert proxy.stats().value("plait_upstream_rq_reset_total", cluster="a") - before == 1
    assert_serves(proxy)


def test_upstream_closing_before_answering_is_503(proxy):
    with Conn(proxy.listener()) as c:
        c.request("GET", "/close-before-response")
        reply = c.reply()
        assert reply.status == 503 and reply.header("x-plait-error") == "upstream_reset"
        c.request("GET", "/echo")  # the downstream connection survives
        assert c.reply().status == 200


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def settle(proxy) -> None:
    """Wait until the sidecar has closed every downstream connection it was handed."""
    deadline = time.monotonic() + 10
    while proxy.stats().value("plait_downstream_cx_active") > 0:
        assert time.monotonic() < deadline, "downstream connections never drained"
        time.sleep(0.05)  # polling a counter for a condition, with a deadline


LINGER_0 = struct.pack("ii", 1, 0)


def abuse(address, n: int) -> None:
    """n connections that fail or are cut: resets, garbage, half heads, aborted requests."""
    for i in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
        s.settimeout(5)
        try:
            s.connect(address)
            kind = i % 4
            if kind == 1:
                s.sendall(b"\x16\x03\x01garbage\r\n\r\n")
            elif kind == 2:
                s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Le")
            elif kind == 3:
                s.sendall(b"POST /delay/20/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n"
                          b"\r\nonly part of the body" if i % 100 == 3 else
                          b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        except OSError:
            pass
        finally:
            s.close()  # SO_LINGER 0: a reset, not a FIN


def test_no_fd_or_memory_growth_after_10000_bad_connections(proxy):
    address = proxy.listener()
    abuse(address, 1000)  # warm up: pools, caches and the allocator reach their size
    settle(proxy)
    fds, rss = fd_count(proxy.pid), rss_kib(proxy.pid)
    for _ in range(9):
        abuse(address, 1000)
        assert_serves(proxy)
    settle(proxy)
    assert fd_count(proxy.pid) <= fds + 5
    assert rss_kib(proxy.pid) <= rss + 8 * 1024, (rss, rss_kib(proxy.pid))
    assert_serves(proxy)
