"""Webhook delivery against a real HTTP receiver on 127.0.0.1: retries, back-off with
jitter, permanent refusals. Back-off sleeps are recorded by a fake `sleep`, not waited."""

import asyncio
import socket

import httpx
import pytest

from plait.controlplane.alarms.delivery import RetryPolicy, deliver
from plait.controlplane.alarms.log import AlarmLog, DeliveryState
from plait.model.alarm_rule import Webhook
from plait.testing.webhook import WebhookReceiver

pytestmark = pytest.mark.timeout(30)

POLICY = RetryPolicy(attempts=4, base=0.5, cap=3.0, timeout=5.0)


def run_delivery(webhook, *, policy=POLICY, rand=lambda: 1.0):
    """Deliver once; returns (last attempt, every attempt, the sleeps asked for)."""
    attempts, sleeps = [], []

    async def sleep(seconds):
        sleeps.append(seconds)

    async def go():
        async with httpx.AsyncClient() as client:
            return await deliver(client, webhook, {"id": 7, "service": "pricing"}, alarm_id=7,
                                 policy=policy, on_attempt=attempts.append, sleep=sleep,
                                 rand=rand)

    return asyncio.run(go()), attempts, sleeps


@pytest.fixture
def receiver(request):
    statuses = getattr(request, "param", (200,))
    with WebhookReceiver(statuses) as r:
        yield r


@pytest.mark.parametrize("receiver", [(503, 500, 200)], indirect=True)
def test_fails_twice_then_delivered(receiver):
    hook = Webhook(url=receiver.url, headers={"authorization": "Bearer s3cret"})
    last, attempts, sleeps = run_delivery(hook)
    assert last.state is DeliveryState.DELIVERED and last.number == 3 and last.status == 200
    assert [(a.number, a.status, a.state) for a in attempts] == [
        (1, 503, DeliveryState.PENDING), (2, 500, DeliveryState.PENDING),
        (3, 200, DeliveryState.DELIVERED)]
    assert attempts[0].error == "HTTP 503"
    assert sleeps == [0.5, 1.0]  # rand() = 1: the top of [d/2, d], d doubling from 0.5
    got = receiver.received
    assert len(got) == 3 and all(r.body == {"id": 7, "service": "pricing"} for r in got)
    assert {r.headers["x-plait-alarm-id"] for r in got} == {"7"}
    assert got[0].headers["authorization"] == "Bearer s3cret"
    assert got[0].headers["content-type"] == "application/json"


@pytest.mark.parametrize("receiver", [(503,)], indirect=True)
def test_gives_up_after_the_attempts_with_capped_jittered_back_off(receiver):
    last, attempts, sleeps = run_delivery(Webhook(url=receiver.url), rand=lambda: 0.0,
                                          policy=RetryPolicy(attempts=5, base=1.0, cap=3.0))
    assert last.state is DeliveryState.FAILED and last.number == 5 and last.error == "HTTP 503"
    assert len(receiver.received) == 5
    assert sleeps == [0.5, 1.0, 1.5, 1.5]  # rand() = 0: the bottom, d/2; d capped at 3


def test_back_off_stays_within_its_bounds():
    policy = RetryPolicy(base=0.5, cap=30.0)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (40, 30.0)]:
        assert policy.backoff(retry, lambda: 0.0) == ceiling / 2
        assert policy.backoff(retry, lambda: 0.999999) <= ceiling


@pytest.mark.parametrize("receiver", [(400,)], indirect=True)
def test_a_refusal_is_not_retried(receiver):
    last, attempts, sleeps = run_delivery(Webhook(url=receiver.url))
    assert last.state is DeliveryState.FAILED and last.status == 400
    assert last.error == "refused with HTTP 400; not retried"
    assert len(receiver.received) == 1 and sleeps == []


@pytest.mark.parametrize("receiver", [(429, 408, 204)], indirect=True)
def test_429_and_408_are_temporary(receiver):
    last, attempts, _ = run_delivery(Webhook(url=receiver.url))
    assert last.state is DeliveryState.DELIVERED and last.number == 3


def test_retry_after_is_honoured_up_to_the_cap():
    with WebhookReceiver((503, 503, 200), headers={"retry-after": "2"}) as r:
        _, _, sleeps = run_delivery(Webhook(url=r.url))
    assert sleeps == [2.0, 2.0]
    with WebhookReceiver((429, 200), headers={"retry-after": "120"}) as r:
        _, _, sleeps = run_delivery(Webhook(url=r.url))
    assert sleeps == [3.0]


def test_no_receiver_at_all():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    last, attempts, _ = run_delivery(Webhook(url=f"http://127.0.0.1:{port}/hook"))
    assert last.state is DeliveryState.FAILED and last.number == 4 and last.status is None
    assert all("ConnectError" in a.error for a in attempts)


def test_the_log_keeps_alarms_and_fails_what_a_restart_interrupted(tmp_path, monkeypatch):
    log = AlarmLog.open(tmp_path)
    first = log.add(namespace="default", rule="r", condition="events", service="pricing",
                    firing={"rule": {"namespace": "default", "name": "r"}})
    second = log.add(namespace="default", rule="r", condition="events", service="cart",
                     firing={"rule": {"namespace": "default", "name": "r"}})
    log.update(first.id, state=DeliveryState.DELIVERED, attempts=3, last_status=200,
               last_error=None)
    log.close()
    log = AlarmLog.open(tmp_path)
    again = {a.id: a for a in log.recent()}
    assert again[first.id].state is DeliveryState.DELIVERED and again[first.id].attempts == 3
    assert again[second.id].state is DeliveryState.FAILED
    assert again[second.id].last_error == "the control plane stopped before delivery"
    assert [a.service for a in log.recent(service="cart")] == ["cart"]
    assert log.recent(limit=1)[0].id == second.id
    monkeypatch.setattr("plait.controlplane.alarms.log.MAX_ALARMS", 3)
    for _ in range(5):
        log.add(namespace="default", rule="r", condition="events", service="x", firing={})
    assert len(log.recent(limit=100)) == 3
    log.close()
