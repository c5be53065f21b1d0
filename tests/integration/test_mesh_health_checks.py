"""HealthCheck through a real mesh: the caller's sidecar probes every instance of the
service, stops sending traffic to one whose app fails its health path before any real
request meets it, and sends it traffic again once it recovers; under STRICT mTLS the
probes speak TLS and pass.

Each test has its own small mesh (a caller and the instances it checks), and applies the
HealthCheck with the API as an operator would.
"""

from __future__ import annotations

import socket

import pytest
import yaml

from plait.testing.control import cli_output, run_cli, start_control
from plait.testing.mesh import wait_until
from plait.testing.secure_mesh import SecureMesh

pytestmark = pytest.mark.timeout(60)

PRICING = ["pricing-1", "pricing-2"]


def health_check(host: str) -> str:
    # Checks five times a second: a failing instance is out after two (0.2-0.4 s).
    return yaml.safe_dump({
        "apiVersion": "plait.io/v1alpha1", "kind": "HealthCheck",
        "metadata": {"name": host, "namespace": "shop"},
        "spec": {"host": host, "http": {"path": "/healthz"}, "interval": "200ms",
                 "timeout": "150ms", "unhealthyThreshold": 2, "healthyThreshold": 1},
    })


def checks(caller, what: str) -> float:
    return caller.stats().value(f"plait_health_check_{what}_total")


def test_the_kind_through_the_cli(tmp_path):
    control = start_control(tmp_path / "control")
    try:
        def cli(*args: str, stdin: str | None = None) -> str:
            return cli_output(control, *args, stdin=stdin)

        assert cli("apply", "-f", "-", stdin=health_check("pricing")).strip() == (
            "HealthCheck shop/pricing configured (version 1)")
        row = cli("get", "hc", "-n", "shop").splitlines()[1].split()
        assert row[:4] == ["shop", "pricing", "pricing", "1"]
        slower = health_check("pricing").replace("interval: 200ms", "interval: 10s")
        assert "(version 2)" in cli("apply", "-f", "-", stdin=slower)
        history = cli("history", "healthcheck", "pricing", "-n", "shop").splitlines()[1:]
        assert [line.split()[0] for line in history] == ["1", "2"]
        assert "now version 3" in cli("rollback", "hc", "pricing", "-n", "shop", "--to", "1")
        current = yaml.safe_load(cli("get", "hc", "pricing", "-n", "shop", "-o", "yaml"))
        assert current["spec"]["interval"] == "200ms"
        refused = run_cli(control, "apply", "-f", "-",
                          stdin=health_check("pricing").replace("150ms", "1s"))
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "error: spec.timeout: must be shorter than the interval (200ms) (document 1)")
        assert "deleted" in cli("delete", "hc", "pricing", "-n", "shop")
    finally:
        control.stop()


def test_an_instance_failing_its_health_path_gets_no_traffic_until_it_recovers(mesh):
    web = mesh.add_app("web")
    for instance in PRICING:
        mesh.add_app("pricing", instance=instance)
    mesh.wait_routable(web, "pricing", set(PRICING))
    address = {i: f"127.0.0.1:{mesh.apps[i].inbound_port}" for i in PRICING}
    mesh.apply_api(health_check("pricing"))
    wait_until(lambda: checks(web, "success") >= 4, timeout=5,
               what="web's sidecar checks both pricing instances")
    assert web.served_by("pricing", 20) == {"pricing-1": 10, "pricing-2": 10}

    # pricing-2's app answers 500 to everything, its health path included. No request
    # is sent meanwhile: the checks alone must take it out.
    mesh.apps["pricing-2"].upstream.fail(500)
    wait_until(lambda: web.endpoint_health("pricing").get(address["pricing-2"]) ==
               "failed_active_hc", timeout=5, what="web's checks fail pricing-2")
    assert web.endpoint_health("pricing")[address["pricing-1"]] == "healthy"
    assert checks(web, "ejections") == 1
    # still registered and still in web's endpoints: web itself chose not to call it
    assert web.service_endpoints("pricing") == set(address.values())
    assert web.served_by("pricing", 20) == {"pricing-1": 20}

    mesh.apps["pricing-2"].upstream.fail(0)
    wait_until(lambda: web.endpoint_health("pricing").get(address["pricing-2"]) == "healthy",
               timeout=5, what="pricing-2 passes its check again")
    assert checks(web, "returns") == 1
    assert web.served_by("pricing", 20) == {"pricing-1": 10, "pricing-2": 10}


@pytest.fixture
def secure_mesh(tmp_path):
    mesh = SecureMesh(tmp_path / "secure-mesh")
    try:
        yield mesh
    finally:
        mesh.close()


def test_under_strict_mtls_the_checks_speak_tls_and_pass(secure_mesh):
    mesh = secure_mesh
    mesh.add_app("b")
    a = mesh.add_app("a", dependencies=("b",))
    mesh.wait_routable(a, "b", {"b"}, timeout=10)
    mesh.apply_api("""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
""")
    wait_until(lambda: plaintext_refused(mesh.apps["b"]), timeout=10,
               what="b's inbound refuses plaintext")
    mesh.apply_api(health_check("b"))
    wait_until(lambda: checks(a, "success") >= 3, timeout=10,
               what="a's checks of b pass over mTLS")
    assert checks(a, "failure") == 0, "no check went out in plaintext"
    assert a.endpoint_health("b") == {f"127.0.0.1:{mesh.apps['b'].inbound_port}": "healthy"}
    # b's sidecar let them through to its app as calls from a (its access log, written
    # every half second, names the TLS peer). b's own sidecar calls b too (no dependency
    # list: it calls everything), so it checks b as well, over mTLS as b.
    log = wait_until(lambda: [e for e in mesh.apps["b"].access_log()
                              if e.get("path") == "/healthz"], timeout=5,
                     what="b's access log shows the checks")
    peers = {e.get("peer") for e in log}
    assert "spiffe://cluster.local/ns/shop/sa/a" in peers
    assert peers <= {"spiffe://cluster.local/ns/shop/sa/a",
                     "spiffe://cluster.local/ns/shop/sa/b"}, peers
    assert {e["code"] for e in log} == {200} and {e["authority"] for e in log} == {"b"}


def plaintext_refused(app) -> bool:
    """Whether `app`'s inbound listener refuses a plaintext request."""
    try:
        with socket.create_connection(("127.0.0.1", app.inbound_port), timeout=5) as sock:
            sock.sendall(b"GET /echo HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n")
            return not sock.recv(16).startswith(b"HTTP/")
    except OSError:  # reset, or closed before an answer
        return True
