"""The governance routes in-process (the real app over ASGI): validation paths, filters,
limits. Delivery is not running here, so alarms stay pending; tests/integration has the
whole path with a real control plane and a real webhook receiver."""

import asyncio

import httpx
import pytest

from plait.controlplane.alarms import AlarmHub, AlarmLog
from plait.controlplane.api import create_app
from plait.controlplane.api.governance_routes import MAX_BODY_BYTES, MAX_EVENTS
from plait.controlplane.registry import Registry
from plait.controlplane.store import SqliteStore
from plait.model import parse_resource


def ev(type_="ejection", service="pricing", **extra):
    return {"type": type_, "service": service, "nodeId": "web-1", "time": 1700000000.5,
            **extra}


def telemetry(**upstreams):
    return {"nodeId": "web-1", "app": "web", "window": 5, "upstreams": upstreams}


@pytest.fixture
def setup(tmp_path):
    store = SqliteStore.open(tmp_path)
    log = AlarmLog.open(None)
    hub = AlarmHub(rules=lambda: [r.resource for r in store.current("AlarmRule")], log=log)
    app = create_app(store=store, registry=Registry(), alarms=hub)

    def call(method, path, **kwargs):
        async def go():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(go())

    yield call, store
    log.close()
    store.close()


@pytest.fixture
def call(setup):
    return setup[0]


def error(response):
    assert response.status_code == 400, response.text
    return response.json()["error"]["path"], response.json()["error"]["reason"]


def test_events_are_kept_and_filtered_oldest_first(call):
    body = [ev(cluster="outbound|80||pricing", host="10.0.0.7:80", detail={"consecutive5xx": 5}),
            ev("rateLimited", "cart"), ev("breakerOpen"), ev("return", host="10.0.0.7:80")]
    assert call("POST", "/api/v1/events", json=body).json() == {"accepted": 4, "alarms": []}
    events = call("GET", "/api/v1/events").json()["events"]
    assert [e["type"] for e in events] == ["ejection", "rateLimited", "breakerOpen", "return"]
    first = events[0]
    assert first["cluster"] == "outbound|80||pricing" and first["host"] == "10.0.0.7:80"
    assert first["nodeId"] == "web-1" and first["time"] == 1700000000.5
    assert first["detail"] == {"consecutive5xx": 5} and first["receivedAt"] > 0
    assert events[1]["cluster"] is None and events[1]["host"] is None
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    pricing = call("GET", "/api/v1/events", params={"service": "pricing"}).json()["events"]
    assert [e["type"] for e in pricing] == ["ejection", "breakerOpen", "return"]
    newest = call("GET", "/api/v1/events", params={"service": "pricing", "limit": 2}).json()
    assert [e["type"] for e in newest["events"]] == ["breakerOpen", "return"]
    only = call("GET", "/api/v1/events", params={"type": "rateLimited"}).json()["events"]
    assert [e["service"] for e in only] == ["cart"]


@pytest.mark.parametrize("body, where, reason", [
    ([ev(), ev("boom")], "[1].type", "unknown event type 'boom'; expected one of ejection, "
                                     "return, breakerOpen, breakerClose, degrade, rateLimited"),
    ([{"type": "ejection", "service": "pricing", "time": 1}], "[0].nodeId",
     "required field is missing"),
    ([ev(zone="a")], "[0].zone", "unknown field"),
    ([ev(time=-1)], "[0].time", "Input should be greater than or equal to 0"),
    ([ev(service="has space")], "[0].service", "String should match pattern"),
    ([ev(detail=[1])], "[0].detail", "must be a mapping"),
    ([ev(detail={"x": "y" * 5000})], "[0].detail", "larger than 4096 bytes as JSON"),
    (ev(), "", "must be a list"),
    ([ev()] * (MAX_EVENTS + 1), "", f"List should have at most {MAX_EVENTS} items"),
])
def test_bad_events_are_refused_with_their_path_and_none_kept(call, body, where, reason):
    got = error(call("POST", "/api/v1/events", json=body))
    assert got[0] == where and got[1].startswith(reason)
    assert call("GET", "/api/v1/events").json() == {"events": []}


def test_bodies_that_are_not_json_or_too_large(call):
    assert error(call("POST", "/api/v1/events", content=b"[{"))[1].startswith("body is not JSON")
    assert error(call("POST", "/api/v1/telemetry", content=b"\xff"))[1].startswith(
        "body is not JSON")
    big = b"[" + b" " * MAX_BODY_BYTES + b"]"
    assert error(call("POST", "/api/v1/events", content=big)) == (
        "", f"body larger than {MAX_BODY_BYTES} bytes")
    nan = b'[{"type": "degrade", "service": "a", "nodeId": "n", "time": 1, "detail": {"x": NaN}}]'
    assert error(call("POST", "/api/v1/events", content=nan))[1] == (
        "body is not JSON: NaN is not a JSON value")
    deep = b"[" * 100000 + b"]" * 100000
    assert error(call("POST", "/api/v1/events", content=deep))[0] == ""


@pytest.mark.parametrize("query, where", [({"type": "boom"}, "type"), ({"limit": 0}, "limit"),
                                          ({"limit": 1001}, "limit")])
def test_bad_event_queries(call, query, where):
    assert error(call("GET", "/api/v1/events", params=query))[0] == where


def test_telemetry_is_summed_per_service(call):
    r = call("POST", "/api/v1/telemetry",
             json=telemetry(pricing={"requests": 90, "errors": 9, "p50Ms": 3, "p99Ms": 40.5},
                            cart={"requests": 10, "errors": 0}))
    assert r.json() == {"accepted": 2, "alarms": []}
    other = {**telemetry(pricing={"requests": 10, "errors": 1, "p99Ms": 80}), "nodeId": "web-2"}
    call("POST", "/api/v1/telemetry", json=other)
    got = {s["service"]: s for s in call("GET", "/api/v1/telemetry").json()["services"]}
    assert got["pricing"] == {"service": "pricing", "requests": 100, "errors": 10,
                              "errorRate": 0.1, "p99MsMax": 80.0, "reporters": 2}
    assert got["cart"]["reporters"] == 1 and got["cart"]["p99MsMax"] is None


@pytest.mark.parametrize("body, where, reason", [
    (telemetry(pricing={"requests": 3, "errors": 5}), "upstreams.pricing.errors",
     "5 errors out of 3 requests"),
    (telemetry(pricing={"requests": -1, "errors": 0}), "upstreams.pricing.requests",
     "Input should be greater than or equal to 0"),
    (telemetry(pricing={"requests": 1, "errors": 0, "p99Ms": "slow"}), "upstreams.pricing.p99Ms",
     "Input should be a valid number"),
    (telemetry(pricing={"requests": 1}), "upstreams.pricing.errors", "required field is missing"),
    ({**telemetry(), "window": 0}, "window", "Input should be greater than 0"),
    ({**telemetry(), "window": 7200}, "window", "Input should be less than or equal to 3600"),
    ({"nodeId": "web-1", "window": 5, "upstreams": {}}, "app", "required field is missing"),
    ({**telemetry(), "extra": 1}, "extra", "unknown field"),
    ([telemetry()], "", "must be a mapping"),
])
def test_bad_telemetry_is_refused_with_its_path(call, body, where, reason):
    got = error(call("POST", "/api/v1/telemetry", json=body))
    assert got[0] == where and got[1].startswith(reason)


def test_events_and_telemetry_raise_alarms(setup):
    call, store = setup
    rules = [{"apiVersion": "plait.io/v1alpha1", "kind": "AlarmRule", "metadata": {"name": name},
              "spec": {**spec, "webhook": {"url": "http://127.0.0.1:9/hook"}}}
             for name, spec in [("opens", {"events": {"types": ["breakerOpen"]}}),
                                ("errors", {"errorRate": {"service": "pricing", "threshold": 0.5,
                                                          "minRequests": 10}})]]
    asyncio.run(store.put_many([parse_resource(r) for r in rules]))
    r = call("POST", "/api/v1/events", json=[ev("ejection"), ev("breakerOpen")])
    assert r.json()["alarms"] == [1]
    r = call("POST", "/api/v1/telemetry", json=telemetry(pricing={"requests": 10, "errors": 6}))
    assert r.json()["alarms"] == [2]
    alarms = call("GET", "/api/v1/alarms").json()["alarms"]
    assert [(a["id"], a["rule"]["name"], a["condition"]) for a in alarms] == [
        (1, "opens", "events"), (2, "errors", "errorRate")]
    assert alarms[0]["event"]["type"] == "breakerOpen"
    assert (alarms[1]["value"], alarms[1]["threshold"], alarms[1]["requests"],
            alarms[1]["errors"], alarms[1]["window"]) == (0.6, 0.5, 10, 6, 60.0)
    assert alarms[1]["delivery"] == {"state": "pending", "attempts": 0, "lastStatus": None,
                                     "lastError": None, "updatedAt": alarms[1]["delivery"]["updatedAt"]}
    assert "webhook" not in alarms[0]
    by_rule = call("GET", "/api/v1/alarms", params={"rule": "errors"}).json()["alarms"]
    assert [a["id"] for a in by_rule] == [2]
    assert call("GET", "/api/v1/alarms", params={"service": "cart"}).json() == {"alarms": []}
