"""`plait control` as users run it: a real subprocess on loopback, driven by the real CLI
and by plain HTTP."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
import yaml

from plait.testing.control import run_cli, start_control
from plait.testing.procs import ProcessFailed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def doc(name: str, *, v1: int = 100, namespace: str = "default") -> str:
    route = [{"destination": {"host": name, "subset": "v1"}, "weight": v1}]
    if v1 != 100:
        route.append({"destination": {"host": name, "subset": "v2"}, "weight": 100 - v1})
    return yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hosts": [name], "http": [{"route": route}]},
    })


def weights(resource: dict) -> list[int | None]:
    return [d.get("weight") for d in resource["spec"]["http"][0]["route"]]


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    cp = start_control(tmp_path_factory.mktemp("control"), secure=True)
    yield cp
    cp.stop()


@pytest.fixture
def api(control):
    with httpx.Client(base_url=control.api_url, headers=control.headers, timeout=10) as client:
        yield client


def test_cli_round_trip(control):
    applied = run_cli(control, "apply", "-f", str(EXAMPLES / "canary.yaml"))
    assert applied.returncode == 0, applied.stderr
    assert "VirtualService default/reviews configured (version 1)" in applied.stdout
    assert "DestinationRule default/reviews configured (version 1)" in applied.stdout

    again = run_cli(control, "apply", "-f", "-", stdin=(EXAMPLES / "canary.yaml").read_text())
    assert "VirtualService default/reviews unchanged (version 1)" in again.stdout

    shifted = (EXAMPLES / "canary.yaml").read_text().replace("weight: 90", "weight: 50").replace(
        "weight: 10", "weight: 50")
    assert run_cli(control, "apply", "-f", "-", stdin=shifted).returncode == 0

    listed = run_cli(control, "get", "VS")
    assert listed.returncode == 0
    row = next(line.split() for line in listed.stdout.splitlines() if " reviews " in f" {line} ")
    assert row[:4] == ["default", "reviews", "reviews", "2"]

    current = yaml.safe_load(run_cli(control, "get", "vs", "reviews", "-o", "yaml").stdout)
    assert weights(current) == [50, 50]

    history = run_cli(control, "history", "virtualservice", "reviews")
    assert [line.split()[0] for line in history.stdout.splitlines()[1:]] == ["1", "2"]

    back = run_cli(control, "rollback", "vs", "reviews", "--to", "1")
    assert back.returncode == 0 and "now version 3" in back.stdout
    current = json.loads(run_cli(control, "get", "vs", "reviews", "-o", "json").stdout)
    assert weights(current) == [90, 10]

    gone = run_cli(control, "delete", "vs", "reviews")
    assert gone.returncode == 0 and "deleted (version 4)" in gone.stdout
    missing = run_cli(control, "get", "vs", "reviews")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: VirtualService default/reviews not found"
    assert run_cli(control, "get", "dr", "reviews").returncode == 0


def test_http_apply_multi_document_and_namespaces(api):
    body = doc("ratings", v1=80) + "---\n" + doc("ratings", namespace="shop")
    r = api.post("/api/v1/apply", content=body, headers={"content-type": "application/yaml"})
    assert r.status_code == 200, r.text
    assert [(a["namespace"], a["version"], a["changed"]) for a in r.json()["applied"]] == [
        ("default", 1, True), ("shop", 1, True)]
    one = api.get("/api/v1/resources/vs/shop/ratings").json()
    assert one["kind"] == "VirtualService" and one["version"] == 1
    assert weights(one["resource"]) == [100]
    shop = api.get("/api/v1/resources/virtualservices", params={"namespace": "shop"}).json()
    assert [i["name"] for i in shop["items"]] == ["ratings"]
    r = api.post("/api/v1/apply", content=doc("ratings", v1=60), headers={"content-type": "text/plain"})
    assert r.json()["applied"][0]["version"] == 2
    history = api.get("/api/v1/resources/vs/default/ratings/history").json()["items"]
    assert [(h["version"], weights(h["resource"])) for h in history] == [(1, [80, 20]), (2, [60, 40])]
    r = api.post("/api/v1/resources/vs/default/ratings/rollback", json={"version": 1})
    assert r.status_code == 200 and r.json()["version"] == 3 and r.json()["changed"]
    assert weights(api.get("/api/v1/resources/vs/default/ratings").json()["resource"]) == [80, 20]
    r = api.delete("/api/v1/resources/vs/shop/ratings")
    assert r.status_code == 200 and r.json()["deleted"] and r.json()["version"] == 2


def test_invalid_resource_is_rejected_with_its_path_and_nothing_is_stored(control, api):
    bad = doc("details") + "---\n" + doc("details-b", v1=70).replace("weight: 30", "weight: 20")
    r = api.post("/api/v1/apply", content=bad, headers={"content-type": "application/yaml"})
    assert r.status_code == 400
    assert r.json() == {"error": {
        "path": "spec.http[0].route",
        "reason": "destination weights total 90; with more than one destination they must total 100",
        "document": 2}}
    assert api.get("/api/v1/resources/vs/default/details").status_code == 404

    cli = run_cli(control, "apply", "-f", "-", stdin=doc("details").replace("weight: 100", "weight: 101"))
    assert cli.returncode == 1
    assert cli.stderr.strip() == (
        "error: spec.http[0].route[0].weight: Input should be less than or equal to 100 (document 1)")
    assert api.get("/api/v1/resources/vs/default/details").status_code == 404
    assert "details" not in run_cli(control, "get", "vs").stdout


def test_error_shapes(api):
    assert api.get("/healthz").json()["status"] == "ok"
    paths = api.get("/openapi.json").json()["paths"]
    assert "/api/v1/apply" in paths and "/api/v1/registry/services" in paths
    r = api.get("/api/v1/resources/gateway")
    assert r.status_code == 400 and r.json()["error"]["path"] == "kind"
    r = api.get("/api/v1/resources/dr/default/nothing")
    assert r.status_code == 404 and "not found" in r.json()["error"]["reason"]
    r = api.post("/api/v1/apply", content=b"kind: [", headers={"content-type": "application/yaml"})
    assert r.status_code == 400 and "invalid YAML" in r.json()["error"]["reason"]
    r = api.post("/api/v1/apply", content=b"", headers={"content-type": "application/yaml"})
    assert r.status_code == 400 and r.json()["error"]["reason"] == "no resources in the input"
    api.post("/api/v1/apply", content=doc("temp"))
    api.delete("/api/v1/resources/vs/default/temp")
    r = api.post("/api/v1/resources/vs/default/temp/rollback", json={"version": 2})
    assert r.status_code == 409
    r = api.post("/api/v1/resources/vs/default/temp/rollback", json={"version": "two"})
    assert r.status_code == 400 and r.json()["error"]["path"] == "version"
    r = api.post("/api/v1/registry/instances", json={"service": "x", "address": "127.0.0.1", "port": 70000})
    assert r.status_code == 400 and r.json()["error"]["path"] == "port"


def test_leases_heartbeats_and_expiry(control, api):
    def register(port: int, ttl: float) -> str:
        r = api.post("/api/v1/registry/instances", json={
            "service": "catalog", "address": "127.0.0.1", "port": port, "ttl": ttl,
            "labels": {"version": "v1"}})
        assert r.status_code == 201, r.text
        assert r.json()["ttl"] == ttl
        return r.json()["leaseId"]

    def ports() -> set[int]:
        services = api.get("/api/v1/registry/services").json()["services"]
        return {i["port"] for s in services if s["name"] == "catalog" for i in s["instances"]}

    # TTLs leave seconds of slack between heartbeats, so a loaded machine cannot make a
    # renewed lease lapse; only the silent one is meant to.
    started = time.monotonic()  # before the silent lease exists: it cannot lapse sooner
    silent, beating, steady = register(18001, 1.0), register(18002, 3.0), register(18003, 60)
    registered = time.monotonic()  # after the beating lease exists
    assert {18002, 18003} <= ports()
    deadline = started + 20
    while 18001 in ports():  # wait, by polling, for the silent lease to lapse
        assert time.monotonic() < deadline, "lease without heartbeats never expired"
        assert api.put(f"/api/v1/registry/leases/{beating}").status_code == 200
        time.sleep(0.05)
    assert time.monotonic() - started >= 1.0  # not before its TTL
    while time.monotonic() < registered + 3.5:  # outlive the beating lease's own TTL
        assert api.put(f"/api/v1/registry/leases/{beating}").status_code == 200
        time.sleep(0.05)
    assert ports() == {18002, 18003}
    assert api.delete(f"/api/v1/registry/leases/{beating}").status_code == 200
    assert ports() == {18003}

    listed = run_cli(control, "services")
    assert "catalog" in listed.stdout and "127.0.0.1:18003" in listed.stdout

    r = api.put(f"/api/v1/registry/leases/{silent}")
    assert r.status_code == 404 and r.json()["error"]["reason"] == f"lease {silent} not found"
    assert api.delete(f"/api/v1/registry/leases/{steady}").status_code == 200
    assert ports() == set()


def test_proxy_status_answers(control):
    out = run_cli(control, "proxy-status", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert isinstance(json.loads(out.stdout), list)


def test_data_survives_a_restart(tmp_path):
    def registry(cp, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{cp.api_url}/api/v1/registry{path}",
                             headers=cp.headers, timeout=10, **kwargs)

    def register(cp, port: int) -> str:
        r = registry(cp, "POST", "/instances", json={
            "service": "catalog", "address": "127.0.0.1", "port": port, "ttl": 600})
        assert r.status_code == 201, r.text
        return r.json()["leaseId"]

    cp = start_control(tmp_path, secure=True)
    try:
        assert run_cli(cp, "apply", "-f", "-", stdin=doc("orders", v1=90)).returncode == 0
        assert run_cli(cp, "apply", "-f", "-", stdin=doc("orders", v1=70)).returncode == 0
        kept, left = register(cp, 18101), register(cp, 18102)
        assert registry(cp, "DELETE", f"/leases/{left}").status_code == 200
    finally:
        assert cp.stop() == 0, cp.stderr()
    down = run_cli(cp, "get", "vs")
    assert down.returncode == 1 and down.stderr.startswith("error: cannot reach the control plane")

    cp = start_control(tmp_path, secure=True)
    try:
        current = json.loads(run_cli(cp, "get", "vs", "orders", "-o", "json").stdout)
        assert weights(current) == [70, 30]
        history = json.loads(run_cli(cp, "history", "vs", "orders", "-o", "json").stdout)
        assert [h["version"] for h in history] == [1, 2]
        assert run_cli(cp, "rollback", "vs", "orders", "--to", "1").returncode == 0
        # The registry too: the same instance under the same lease, with a fresh TTL.
        [catalog] = registry(cp, "GET", "/services").json()["services"]
        assert [(i["port"], i["leaseId"]) for i in catalog["instances"]] == [(18101, kept)]
        assert registry(cp, "PUT", f"/leases/{kept}").status_code == 200
        assert registry(cp, "PUT", f"/leases/{left}").status_code == 404
    finally:
        assert cp.stop() == 0, cp.stderr()


def test_second_control_plane_on_the_same_data_dir_is_refused(control):
    with pytest.raises(ProcessFailed, match="in use by another control plane"):
        start_control(control.data_dir).stop()


@pytest.mark.parametrize("option, message", [
    ("api_port", "cannot listen on 127.0.0.1:{port} for the API"),
    ("xds_port", "cannot serve xDS on 127.0.0.1:{port}"),
])
def test_busy_ports_are_reported(tmp_path, option, message):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ProcessFailed) as failed:
            start_control(tmp_path, **{option: port}).stop()
    assert "exited with 1" in str(failed.value)
    assert message.format(port=port) in str(failed.value)
