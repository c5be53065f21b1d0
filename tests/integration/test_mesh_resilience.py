"""The mesh when its control plane is gone: the data plane must not notice.

A control plane, a caller `web` and one `pricing` instance, shared by the tests of this
module. Each test kills the control plane and brings it back on the same ports with the
same data directory (what a supervisor does); the `healthy` fixture makes sure the next
test starts with everything connected and registered again.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from plait.testing.mesh import Mesh, wait_until

pytestmark = pytest.mark.timeout(60)

ALL = {"web", "pricing-v1"}
# Reconnection waits for the sidecar's back-off: jittered, doubling from 0.25 s per
# failure, at most 8 s.
RECONNECT_DEADLINE = 10.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    mesh = Mesh(tmp_path_factory.mktemp("mesh"), lease_ttl=3.0)
    try:
        web = mesh.add_app("web", initial_fetch_timeout=0.5)
        mesh.add_app("pricing", instance="pricing-v1", labels={"version": "v1"})
        mesh.wait_routable(web, "pricing", {"pricing-v1"})
        yield mesh
    finally:
        mesh.close()


@pytest.fixture
def healthy(mesh):
    yield mesh
    if mesh.control.process.returncode is not None:
        mesh.start_control(same_ports=True)
    wait_for_reconnection(mesh)


def registered(mesh: Mesh) -> set[str]:
    services = mesh.api("GET", "/api/v1/registry/services").json()["services"]
    return {i["instanceId"] for s in services for i in s["instances"]}


def wait_for_reconnection(mesh: Mesh) -> None:
    for app in (a for a in mesh.apps.values() if a.running):
        wait_until(lambda: app.xds()["connected"], timeout=RECONNECT_DEADLINE,
                   what=f"{app.instance} reconnects to the control plane")
    wait_until(lambda: registered(mesh) == ALL, timeout=5,
               what="every app registered again")
    wait_until(lambda: set(mesh.proxies()) == ALL, timeout=5,
               what="every sidecar listed by the control plane")


def test_a_killed_control_plane_changes_nothing_and_its_return_is_noticed(healthy):
    mesh = healthy
    web, pricing = mesh.apps["web"], mesh.apps["pricing-v1"]
    since = {name: app.xds()["connected_since"] for name, app in mesh.apps.items()}

    mesh.kill_control()
    for app in (web, pricing):
        wait_until(lambda: not app.xds()["connected"], timeout=5,
                   what=f"{app.instance} notices the control plane is gone")
    assert web.served_by("pricing", 50) == {"pricing-v1": 50}
    assert web.service_endpoints("pricing") == {f"127.0.0.1:{pricing.inbound_port}"}

    mesh.start_control(same_ports=True)  # with the instances it had, on fresh leases
    wait_for_reconnection(mesh)
    for name, app in mesh.apps.items():
        assert app.xds()["connected_since"] > since[name]
    listed = mesh.cli("services", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    services = {s["name"]: s for s in json.loads(listed.stdout)}
    instance = services["pricing"]["instances"][0]
    assert (instance["instanceId"], instance["port"], instance["labels"]) == \
        ("pricing-v1", pricing.inbound_port, {"version": "v1"})
    status = json.loads(mesh.cli("proxy-status", "-o", "json").stdout)
    assert {p["node_id"] for p in status} == ALL
    wait_until(lambda: all(p["synced"] for p in mesh.proxies().values()), timeout=5,
               what="every sidecar acknowledges the new control plane's config")
    assert web.served_by("pricing", 50) == {"pricing-v1": 50}


def test_a_sidecar_started_while_the_control_plane_is_down_serves_from_its_cache(healthy):
    mesh = healthy
    web = mesh.apps["web"]
    assert web.stop_sidecar() == 0
    mesh.kill_control()

    web.start_sidecar()  # waits for the ready line
    assert "serving cached config" in web.admin.process.stderr_text()
    dump = web.config_dump()
    assert dump["version"].startswith("cache:")
    assert not dump["xds"]["connected"]
    assert web.served_by("pricing", 20) == {"pricing-v1": 20}


def test_a_restarted_control_plane_keeps_callers_on_instances_that_have_not_heartbeated_yet(
        healthy):
    mesh = healthy
    web = mesh.apps["web"]
    # A 30 s lease heartbeats every 10 s: the control plane is back long before the next.
    inventory = mesh.add_app("inventory", lease_ttl=30.0)
    try:
        mesh.wait_routable(web, "inventory", {"inventory"})
        mesh.kill_control()
        mesh.start_control(same_ports=True)
        endpoint = {f"127.0.0.1:{inventory.inbound_port}"}
        outcomes: Counter = Counter()
        deadline = time.monotonic() + 15.0
        settled = False
        while not settled:
            assert time.monotonic() < deadline, f"no recovery within 15 s: {outcomes}"
            for _ in range(20):
                reply = web.call("inventory")
                outcomes[reply.served_by or f"<{reply.status}>"] += 1
            settled = (web.xds()["connected"] and "inventory" in mesh.instances("inventory")
                       and web.service_endpoints("inventory") == endpoint)
        assert set(outcomes) == {"inventory"}, outcomes
    finally:
        inventory.stop_sidecar()
