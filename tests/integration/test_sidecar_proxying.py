"""The sidecar forwards HTTP/1.1 faithfully: real curl, httpx and raw sockets through a
real `plait sidecar` to real upstream processes.

One sidecar and two upstreams (a, b) serve the whole module: host b.example and paths under
/to-b/ go to b, everything else to a.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import httpx
import pytest

from plait.testing import sidecar as sc
from plait.testing.wire import Conn

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ups():
    with sc.upstreams("a", "b") as started:
        yield started


@pytest.fixture(scope="module")
def proxy(ups):
    config = sc.bootstrap(
        listeners=[sc.listener("outbound", [
            sc.virtual_host("b-host", ["b.example"], [sc.route("b")]),
            sc.virtual_host("all", ["*"], [sc.route("b", prefix="/to-b/"), sc.route("a")]),
        ])],
        clusters=[sc.cluster("a", [ups["a"].port]), sc.cluster("b", [ups["b"].port])])
    with sc.start_sidecar(config) as sidecar:
        yield sidecar


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args],
                          capture_output=True, timeout=timeout + 5)


def test_curl_and_httpx_reach_the_upstream(proxy):
    out = curl("-H", "X-Trace: 1", proxy.url("/echo?q=1"))
    echo = json.loads(out.stdout)
    assert (echo["name"], echo["path"], echo["method"]) == ("a", "/echo?q=1", "GET")
    assert ["x-trace", "1"] in echo["headers"]
    resp = httpx.put(proxy.url("/echo"), content=b"x" * 1000, timeout=10)
    assert resp.status_code == 200 and resp.headers["x-upstream-name"] == "a"
    assert resp.json()["body_length"] == 1000 and resp.json()["method"] == "PUT"


def test_routing_by_host_and_path(proxy):
    with httpx.Client(timeout=10) as client:
        def upstream(path: str, host: str) -> str:
            return client.get(proxy.url(path), headers={"host": host}).headers["x-upstream-name"]

        assert upstream("/echo", "b.example") == "b"
        assert upstream("/echo", "B.EXAMPLE:15001") == "b"
        assert upstream("/to-b/echo", "other") == "b"
        assert upstream("/to-bee", "other") == "a"
        assert upstream("/echo", "other") == "a"


def test_keep_alive_reuses_connections_both_sides(proxy, ups):
    before_up = ups["a"].count()
    before = proxy.stats()
    with httpx.Client(timeout=10) as client:
        for i in range(20):
            assert client.get(proxy.url(f"/echo/{i}")).status_code == 200
    after_up = ups["a"].count()
    after = proxy.stats()
    assert after_up["requests"] - before_up["requests"] == 20
    assert after_up["connections"] - before_up["connections"] <= 1
    cx = "plait_upstream_cx_total"
    assert after.value(cx, cluster="a") - before.value(cx, cluster="a") <= 1
    down = "plait_downstream_cx_total"
    # One downstream connection for 20 requests (plus none from anyone else).
    assert after.value(down) - before.value(down) == 1


def test_large_upload_with_expect_100_continue(proxy, tmp_path):
    body = bytes(range(256)) * (3 * 4096)  # 3 MiB
    path = tmp_path / "upload.bin"
    path.write_bytes(body)
    out = curl("-v", "-H", "Expect: 100-continue", "--data-binary", f"@{path}",
               proxy.url("/echo"))
    assert b"HTTP/1.1 100 Continue" in out.stderr
    echo = json.loads(out.stdout)
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert all(name != "expect" for name, _ in echo["headers"])  # answered by the sidecar


def test_100_continue_comes_before_the_body_is_sent(proxy):
    with Conn(proxy.listener()) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
               b"Content-Length: 5\r\n\r\n")
        assert c.file.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert c.file.readline() == b"\r\n"
        c.send(b"hello")
        reply = c.reply()
        assert reply.status == 200 and json.loads(reply.body)["body_length"] == 5


def test_chunked_upload_streams_through(proxy):
    piece = b"0123456789abcdef" * 4096
    sha = hashlib.sha256()

    def pieces():
        for _ in range(32):  # 2 MiB in 64 KiB pieces, sent chunked
            sha.update(piece)
            yield piece

    resp = httpx.post(proxy.url("/echo"), content=pieces(), timeout=20)
    echo = resp.json()
    assert echo["body_length"] == 32 * len(piece)
    assert echo["body_sha256"] == sha.hexdigest()
    assert ["transfer-encoding", "chunked"] in echo["headers"]


def test_request_trailers_reach_the_upstream(proxy):
    with Conn(proxy.listener()) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Digest: abc\r\n\r\n")
        echo = json.loads(c.reply().body)
    assert echo["body_length"] == 11
    assert echo["trailers"] == [["x-digest", "abc"]]


def test_response_trailers_reach_the_client(proxy):
    with Conn(proxy.listener()) as c:
        c.request("GET", "/chunked/4", headers={"Connection": "close"})
        raw = c.read_until_close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    content = b"".join(b"chunk %d\n" % i for i in range(4))
    assert body.endswith(b"0\r\nx-checksum: %s\r\n\r\n" % hashlib.sha256(content).hexdigest()
                         .encode())


def test_large_download_streams_through(proxy, tmp_path):
    size = 8_000_000
    target = tmp_path / "down.bin"
    out = curl("-o", str(target), "-w", "%{http_code}", proxy.url(f"/large/{size}"))
    assert out.stdout == b"200"
    pattern = bytes(i % 251 for i in range(251))  # what the upstream sends
    expected = pattern * (size // 251) + bytes(range(size % 251))
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(expected).digest()


def test_websocket_upgrade_is_tunnelled(proxy):
    with Conn(proxy.listener()) as c:
        c.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               b"\r\nearly bytes")
        head = c.reply_head()
        assert head.status == 101 and head.header("upgrade") == "websocket"
        assert c.read_exactly(11) == b"early bytes"
        for i in range(5):
            frame = b"\x81\x05frame%d" % i
            c.send(frame)
            assert c.read_exactly(len(frame)) == frame


def test_refused_upgrade_never_leaks_an_answer_to_the_next_request(proxy):
    # The upstream ignores Upgrade and reads the early bytes as a request of its own.
    with Conn(proxy.listener()) as c:
        c.send(b"GET /ignore-upgrade HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
               b"Upgrade: websocket\r\n\r\n"
               b"GET /delay/200/status/299 HTTP/1.1\r\nHost: smuggled\r\n\r\n")
        first = c.reply()
        assert first.status == 200 and first.body == b"no upgrade here\n"
        assert c.closed()
    with Conn(proxy.listener()) as c:
        c.request("GET", "/echo/after")
        after = c.reply()
    assert after.status == 200 and json.loads(after.body)["path"] == "/echo/after"


def test_http10_client(proxy):
    with Conn(proxy.listener()) as c:
        c.send(b"GET /echo HTTP/1.0\r\n\r\n")
        reply = c.reply()
        assert reply.status == 200 and json.loads(reply.body)["name"] == "a"
        assert c.closed()
    with Conn(proxy.listener()) as c:  # keep-alive on request, and a chunked upstream
        c.send(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        reply = c.reply()
        assert reply.header("connection") == "keep-alive" and reply.header("content-length")
        c.send(b"GET /chunked/3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        raw = c.read_until_close()
    assert b"transfer-encoding" not in raw.lower()  # HTTP/1.0 knows no chunked: close ends it
    assert raw.endswith(b"chunk 0\nchunk 1\nchunk 2\n")
    out = curl("--http1.0", "-i", proxy.url("/status/202"))
    assert out.stdout.startswith(b"HTTP/1.1 202")


def test_pipelined_requests_are_answered_in_order(proxy):
    with Conn(proxy.listener()) as c:
        c.send(b"GET /delay/150/echo/1 HTTP/1.1\r\nHost: h\r\n\r\n"
               b"POST /echo/2 HTTP/1.1\r\nHost: b.example\r\nContent-Length: 3\r\n\r\nabc"
               b"HEAD /echo/3 HTTP/1.1\r\nHost: h\r\n\r\n"
               b"GET /status/201 HTTP/1.1\r\nHost: h\r\n\r\n")
        one, two = c.reply(), c.reply()
        three, four = c.reply(method="HEAD"), c.reply()
    assert json.loads(one.body)["path"] == "/delay/150/echo/1"
    assert json.loads(two.body)["name"] == "b" and json.loads(two.body)["body_length"] == 3
    assert three.status == 200 and three.body == b"" and int(three.header("content-length")) > 0
    assert four.status == 201


def test_head_responses_have_no_body_and_keep_the_connection(proxy):
    out = curl("-I", proxy.url("/large/5000"))
    assert out.stdout.startswith(b"HTTP/1.1 200") and b"content-length: 5000" in out.stdout
    with Conn(proxy.listener()) as c:
        for _ in range(3):
            c.request("HEAD", "/large/5000")
            head = c.reply(method="HEAD")
            assert head.status == 200 and head.header("content-length") == "5000"
        c.request("GET", "/status/204")
        assert c.reply().status == 204


def test_interim_responses_do_not_end_the_exchange(proxy):
    for code in (100, 103):
        with Conn(proxy.listener()) as c:
            c.request("GET", f"/interim/{code}/echo")
            reply = c.reply()
        assert reply.status == 200 and json.loads(reply.body)["name"] == "a"


def test_close_delimited_upstream_response_is_reframed(proxy):
    out = curl("-i", "--raw", proxy.url("/http10"))
    assert out.stdout.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in out.stdout.lower()
    assert out.stdout.endswith(b"14\r\nclose-delimited body\r\n0\r\n\r\n")


def test_bytes_past_the_end_of_a_response_never_reach_the_next_request(proxy):
    for _ in range(3):
        with Conn(proxy.listener()) as c:  # content-length 5, then the start of another
            c.request("GET", "/overlong")
            assert c.reply().body == b"hello"
        with Conn(proxy.listener()) as c:
            c.request("GET", "/echo/next")
            reply = c.reply()
        assert reply.status == 200 and json.loads(reply.body)["path"] == "/echo/next"
