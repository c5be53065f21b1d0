"""Governance through a real `plait control`: the plait.io kinds through the CLI, events
and telemetry posted as sidecars post them, and alarms delivered to a real webhook
receiver on 127.0.0.1 that fails twice before it accepts."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from plait.testing.control import run_cli, start_control
from plait.testing.mesh import wait_until
from plait.testing.webhook import WebhookReceiver

pytestmark = pytest.mark.timeout(90)


def alarm_rule(name: str, url: str, **spec) -> str:
    return yaml.safe_dump({
        "apiVersion": "plait.io/v1alpha1", "kind": "AlarmRule", "metadata": {"name": name},
        "spec": {**spec, "webhook": {"url": url, "headers": {"authorization": "Bearer hook"}}},
    })


RATE_LIMIT = """
apiVersion: plait.io/v1alpha1
kind: RateLimit
metadata: {name: pricing}
spec:
  service: pricing
  rules:
  - {key: service, limit: {requests: 100, per: 1s}, scope: global}
---
apiVersion: plait.io/v1alpha1
kind: CircuitBreaker
metadata: {name: pricing}
spec: {service: pricing, strategy: errorRatio, threshold: 0.5, openDuration: 10s}
---
apiVersion: plait.io/v1alpha1
kind: Degrade
metadata: {name: pricing}
spec: {service: pricing, when: [circuitOpen], fallback: {status: 200, body: "{}"}}
"""


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    cp = start_control(tmp_path_factory.mktemp("control"))
    yield cp
    cp.stop()


@pytest.fixture
def api(control):
    with httpx.Client(base_url=control.api_url, timeout=10) as client:
        yield client


def apply(api, text: str) -> None:
    r = api.post("/api/v1/apply", content=text, headers={"content-type": "application/yaml"})
    assert r.status_code == 200, r.text


def alarms_of(api, rule: str) -> list[dict]:
    return api.get("/api/v1/alarms", params={"rule": rule}).json()["alarms"]


def test_governance_kinds_through_the_cli(control):
    applied = run_cli(control, "apply", "-f", "-", stdin=RATE_LIMIT)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [
        "RateLimit default/pricing configured (version 1)",
        "CircuitBreaker default/pricing configured (version 1)",
        "Degrade default/pricing configured (version 1)"]
    listed = run_cli(control, "get", "rl")
    assert listed.stdout.splitlines()[1].split()[:4] == ["default", "pricing", "pricing", "1"]

    raised = RATE_LIMIT.split("---")[0].replace("requests: 100", "requests: 250")
    assert "(version 2)" in run_cli(control, "apply", "-f", "-", stdin=raised).stdout
    history = run_cli(control, "history", "rl", "pricing")
    assert [line.split()[0] for line in history.stdout.splitlines()[1:]] == ["1", "2"]
    back = run_cli(control, "rollback", "ratelimit", "pricing", "--to", "1")
    assert "now version 3" in back.stdout, back.stderr
    current = yaml.safe_load(run_cli(control, "get", "rl", "pricing", "-o", "yaml").stdout)
    assert current["spec"]["rules"][0]["limit"] == {"requests": 100, "per": "1s"}

    bad = RATE_LIMIT.split("---")[0].replace("scope: global", "scope: cluster")
    refused = run_cli(control, "apply", "-f", "-", stdin=bad)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: spec.rules[0].scope: Input should be 'local' or 'global' (document 1)")
    gone = run_cli(control, "delete", "cb", "pricing")
    assert gone.returncode == 0 and "deleted (version 2)" in gone.stdout


def test_event_alarm_is_retried_until_the_webhook_takes_it(control, api):
    with WebhookReceiver((503, 503, 200)) as hook:
        rule = alarm_rule("breakers", hook.url, events={"types": ["breakerOpen"],
                                                        "service": "pricing"})
        apply(api, rule)
        events = [
            {"type": "ejection", "service": "pricing", "cluster": "outbound|80||pricing",
             "host": "127.0.0.1:9080", "nodeId": "web-1", "time": 1700000000.0,
             "detail": {"reason": "consecutive5xx"}},
            {"type": "breakerOpen", "service": "cart", "nodeId": "web-1", "time": 1700000000.1},
            {"type": "breakerOpen", "service": "pricing", "nodeId": "web-1",
             "time": 1700000000.2, "detail": {"errorRatio": 0.75}},
        ]
        r = api.post("/api/v1/events", json=events)
        assert r.status_code == 200 and r.json()["accepted"] == 3
        [alarm_id] = r.json()["alarms"]

        received = hook.wait_for(3, timeout=20)
        assert [x.answered for x in received] == [503, 503, 200]
        assert all(x.body == received[0].body for x in received)  # the same alarm, retried
        assert {x.headers["x-plait-alarm-id"] for x in received} == {str(alarm_id)}
        assert received[0].headers["authorization"] == "Bearer hook"
        assert received[0].headers["user-agent"] == "plait-control"
        body = received[0].body
        assert body["rule"] == {"namespace": "default", "name": "breakers"}
        assert body["condition"] == "events" and body["service"] == "pricing"
        assert body["event"]["type"] == "breakerOpen"
        assert body["event"]["detail"] == {"errorRatio": 0.75}

        [alarm] = wait_until(
            lambda: [a for a in alarms_of(api, "breakers")
                     if a["delivery"]["state"] == "delivered"],
            timeout=10, what="the alarm recorded as delivered")  # fmt: skip
        assert alarm["id"] == alarm_id
        assert (alarm["delivery"]["attempts"], alarm["delivery"]["lastStatus"]) == (3, 200)

    table = run_cli(control, "alarms", "--rule", "breakers")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["ID", "FIRED", "RULE", "SERVICE", "CONDITION", "VALUE",
                              "DELIVERY", "ATTEMPTS", "LAST"]
    cells = row.split()
    assert cells[2:] == ["default/breakers", "pricing", "events", "breakerOpen", "delivered",
                         "3", "200"]

    listed = run_cli(control, "events", "--service", "pricing")
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [r[1] for r in rows] == ["ejection", "breakerOpen"]
    assert rows[0][2:6] == ["pricing", "outbound|80||pricing", "127.0.0.1:9080", "web-1"]
    as_json = json.loads(run_cli(control, "events", "--type", "breakerOpen", "-o", "json").stdout)
    assert [e["service"] for e in as_json] == ["cart", "pricing"]
    wrong = run_cli(control, "events", "--limit", "0")
    assert wrong.returncode == 1 and wrong.stderr.startswith("error: limit: ")


def test_error_rate_alarm_from_telemetry_of_several_proxies(control, api):
    with WebhookReceiver((200,)) as hook:
        rule = alarm_rule("checkout-errors", hook.url, cooldown="10m",
                          errorRate={"service": "checkout", "threshold": 0.5, "window": "1m",
                                     "minRequests": 20})  # fmt: skip
        apply(api, rule)

        def report(node: str, requests: int, errors: int) -> list[int]:
            r = api.post("/api/v1/telemetry", json={
                "nodeId": node, "app": "web", "window": 5,
                "upstreams": {"checkout": {"requests": requests, "errors": errors,
                                           "p50Ms": 4.0, "p99Ms": 95.0}}})
            assert r.status_code == 200, r.text
            return r.json()["alarms"]

        assert report("web-1", 15, 5) == []  # 15 calls: too few to judge
        assert report("web-2", 15, 5) == []  # 10 of 30 failed: below the threshold
        assert len(report("web-2", 10, 10)) == 1  # 20 of 40 failed: at the threshold
        assert report("web-1", 10, 10) == []  # still bad, but within the cooldown
        [delivered] = hook.wait_for(1, timeout=20)
        body = delivered.body
        assert body["condition"] == "errorRate" and body["service"] == "checkout"
        assert (body["requests"], body["errors"], body["threshold"]) == (40, 20, 0.5)
        assert body["value"] == 0.5 and body["window"] == 60
    totals = {s["service"]: s for s in api.get("/api/v1/telemetry").json()["services"]}
    assert totals["checkout"]["reporters"] == 2 and totals["checkout"]["requests"] == 50


def test_alarms_outlive_a_restart(control, api):
    # Last in the module: it stops the shared control plane and starts another on its data.
    with WebhookReceiver((200,)) as hook:
        apply(api, alarm_rule("ejections", hook.url, events={"types": ["ejection"]}))
        event = {"type": "ejection", "service": "pricing", "nodeId": "n", "time": 1.0}
        api.post("/api/v1/events", json=[event]).raise_for_status()
        hook.wait_for(1, timeout=20)
        wait_until(lambda: alarms_of(api, "ejections")[0]["delivery"]["state"] == "delivered",
                   timeout=10, what="the alarm recorded as delivered")
    assert control.stop() == 0
    with start_control(control.data_dir) as again:
        found = httpx.get(f"{again.api_url}/api/v1/alarms", params={"rule": "ejections"})
        [alarm] = found.json()["alarms"]
        assert alarm["delivery"]["state"] == "delivered" and alarm["service"] == "pricing"
        assert run_cli(again, "events").stderr.strip() == "no events"  # events: memory only


def test_governance_routes_are_behind_authentication(tmp_path):
    with start_control(tmp_path, secure=True) as cp:
        event = [{"type": "degrade", "service": "pricing", "nodeId": "n", "time": 1.0}]
        assert httpx.post(f"{cp.api_url}/api/v1/events", json=event).status_code == 401
        assert httpx.get(f"{cp.api_url}/api/v1/alarms").status_code == 401
        r = httpx.post(f"{cp.api_url}/api/v1/events", json=event, headers=cp.headers)
        assert r.status_code == 200, r.text
        listed = run_cli(cp, "events", "--type", "degrade")
        assert listed.returncode == 0 and " pricing " in listed.stdout, listed.stderr
