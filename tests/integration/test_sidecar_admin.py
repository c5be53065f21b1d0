"""The admin endpoint of a real sidecar: readiness, stats, config and cluster views, drain
and quit; and a bootstrap that is refused before anything starts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from plait.testing import sidecar as sc
from plait.testing.wire import Conn

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def up():
    with sc.upstreams("a") as ups:
        yield ups["a"]


@pytest.fixture
def proxy(up):
    with sc.start_sidecar(sc.simple([up.port])) as sidecar:
        yield sidecar


def test_ready(proxy):
    assert proxy.admin_request("/ready") == (200, b"LIVE\n")


def test_stats_count_what_was_sent(proxy, up):
    with Conn(proxy.listener()) as c:
        for i in range(7):
            c.request("GET", f"/echo/{i}")
            assert c.reply().status == 200
        c.request("GET", "/status/500")
        assert c.reply().status == 500
    stats = proxy.stats()  # parsed by prometheus_client's text parser
    assert stats.value("plait_downstream_rq_total", listener="outbound") == 8
    assert stats.value("plait_upstream_rq_total", cluster="app", code="200") == 7
    assert stats.value("plait_upstream_rq_total", cluster="app", code="500") == 1
    assert stats.value("plait_upstream_host_rq_total", host=f"127.0.0.1:{up.port}") == 8
    assert stats.value("plait_upstream_rq_duration_seconds_count", cluster="app") == 8
    status, body = proxy.admin_request("/stats")
    counters = {(c["name"], tuple(sorted(c["labels"].items()))): c["value"]
                for c in json.loads(body)["counters"]}
    assert counters[("downstream_rq_total", (("listener", "outbound"),))] == 8


def test_config_dump(proxy, up):
    dump = proxy.config_dump()
    assert [l["name"] for l in dump["listeners"]] == ["outbound"]
    [cluster] = dump["clusters"]
    assert cluster["name"] == "app" and cluster["endpoints"] == [f"127.0.0.1:{up.port}"]
    assert dump["source"]["static_resources"]["clusters"][0]["name"] == "app"


def test_clusters_text_and_json(proxy, up):
    with Conn(proxy.listener()) as c:
        for _ in range(3):
            c.request("GET", "/echo")
            c.reply()
    status, text = proxy.admin_request("/clusters")
    host = f"127.0.0.1:{up.port}"
    assert status == 200
    lines = set(text.decode().splitlines())
    assert {f"app::{host}::health::healthy", f"app::{host}::rq_total::3"} <= lines
    status, body = proxy.admin_request("/clusters?format=json")
    [cluster] = json.loads(body)["clusters"]
    [endpoint] = cluster["endpoints"]
    assert (cluster["name"], endpoint["address"], endpoint["rq_total"]) == ("app", host, 3)


def test_unknown_paths_and_methods(proxy):
    assert proxy.admin_request("/nope")[0] == 404
    assert proxy.admin_request("/drain")[0] == 405  # GET must not drain
    assert proxy.admin_request("/ready") == (200, b"LIVE\n")


def test_drain_finishes_in_flight_requests_then_exits_0(proxy):
    slow = Conn(proxy.listener(), timeout=10)
    slow.request("GET", "/delay/1500/echo")
    result = {}
    reader = threading.Thread(target=lambda: result.update(reply=slow.reply()))
    reader.start()
    # Drain only once the request is in flight (the sidecar counts it active).
    deadline = time.monotonic() + 5
    while proxy.stats().value("plait_upstream_rq_active", cluster="app") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)  # polling a counter for a condition, with a deadline
    assert proxy.admin_request("/drain", method="POST") == (200, b"OK\n")
    assert proxy.process.wait(timeout=10) == 0
    reader.join(10)
    slow.close()
    reply = result["reply"]
    assert reply.status == 200 and json.loads(reply.body)["path"] == "/delay/1500/echo"
    assert reply.header("connection") == "close"  # draining: no more requests here


def test_quitquitquit_exits_at_once(proxy):
    assert proxy.admin_request("/quitquitquit", method="POST") == (200, b"OK\n")
    assert proxy.process.wait(timeout=5) == 0


def test_invalid_bootstrap_exits_nonzero_naming_the_field(tmp_path, up):
    config = sc.simple([up.port])
    config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0][
        "lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = 0
    path = sc.write_bootstrap(config, tmp_path)
    out = subprocess.run([sys.executable, "-m", "plait", "sidecar", "--bootstrap", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert ("static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0]"
            ".endpoint.address.socket_address.port_value") in out.stderr
    assert "plait sidecar ready" not in out.stdout


def test_a_listener_port_in_use_exits_nonzero(tmp_path, up):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        config = sc.simple([up.port])
        config["static_resources"]["listeners"][0]["address"]["socket_address"][
            "port_value"] = taken.getsockname()[1]
        path = sc.write_bootstrap(config, tmp_path)
        out = subprocess.run([sys.executable, "-m", "plait", "sidecar", "--bootstrap",
                              str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "cannot listen" in out.stderr
    assert "plait sidecar ready" not in out.stdout
