"""Every failure the sidecar generates names its reason to the caller (x-plait-error and a
one-line body) and in the access log (`--access-log PATH`, one JSON line per request)."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from plait.testing import sidecar as sc
from plait.testing.wire import Conn

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    yield s.getsockname()[1]
    s.close()


@pytest.fixture(scope="module")
def proxy(dead_port, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "access.jsonl"
    with sc.upstreams("a") as ups:
        config = sc.bootstrap(
            listeners=[sc.listener("outbound", [
                sc.virtual_host("narrow", ["narrow"], [sc.route("a", path="/only")]),
                sc.virtual_host("dead", ["dead"], [sc.route("dead")]),
                sc.virtual_host("empty", ["empty"], [sc.route("empty")]),
                sc.virtual_host("slow", ["slow"], [sc.route("a", timeout=0.3)]),
            ])],
            clusters=[sc.cluster("a", [ups["a"].port]), sc.cluster("dead", [dead_port]),
                      sc.cluster("empty", [])])
        with sc.start_sidecar(config, access_log=str(log)) as sidecar:
            sidecar.log = log
            sidecar.upstream_port = ups["a"].port
            yield sidecar


def log_entries(proxy, count: int, *, timeout: float = 5.0) -> list[dict]:
    """The access log once it holds `count` lines (it is flushed every half second)."""
    deadline = time.monotonic() + timeout
    while True:
        text = proxy.log.read_text() if proxy.log.exists() else ""
        lines = text.splitlines()
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)  # polling a file for a condition, with a deadline


ERRORS = [
    # host, path, status, reason
    ("nowhere", "/", 404, "no_route"),
    ("narrow", "/other", 404, "no_route"),
    ("dead", "/echo", 503, "upstream_connect_failure"),
    ("empty", "/echo", 503, "no_healthy_upstream"),
    ("slow", "/delay/3000/echo", 504, "upstream_timeout"),
]


def test_generated_errors_are_named_to_the_caller_and_in_the_access_log(proxy):
    start = len(log_entries(proxy, 0, timeout=0))
    with httpx.Client(timeout=10) as client:
        for host, path, status, reason in ERRORS:
            reply = client.get(proxy.url(path), headers={"host": host})
            assert reply.status_code == status, (host, reply.text)
            assert reply.headers["x-plait-error"] == reason
            assert reply.text == reason + "\n"
        ok = client.get(proxy.url("/only"), headers={"host": "narrow"})
        assert ok.status_code == 200 and "x-plait-error" not in ok.headers
    entries = log_entries(proxy, start + len(ERRORS) + 1)[start:]
    assert [(e["authority"], e["path"], e["code"], e["error"]) for e in entries] == [
        *ERRORS, ("narrow", "/only", 200, "")]
    for entry in entries:
        timing = entry["timing_ms"]
        assert set(timing) >= {"downstream_read", "upstream_connect", "upstream_response",
                               "total"}
        assert all(v >= 0 for v in timing.values())
    assert entries[4]["timing_ms"]["total"] >= 300  # the 0.3 s route timeout
    assert entries[5]["cluster"] == "a"
    assert entries[5]["upstream_host"] == f"127.0.0.1:{proxy.upstream_port}"


def test_a_malformed_request_is_400_and_logged(proxy):
    start = len(log_entries(proxy, 0, timeout=0))
    with Conn(proxy.listener()) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
        reply = c.reply()
        assert reply.status == 400 and reply.header("x-plait-error") == "bad_request"
        assert c.closed()
    [entry] = log_entries(proxy, start + 1)[start:]
    assert entry["error"] == "bad_request" and entry["code"] == 0
    assert entry["downstream"].startswith("127.0.0.1:")
