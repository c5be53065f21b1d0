"""The hub's own task: the tick evaluates rules without new reports, and queued alarms are
delivered to a real receiver while the API side only records them."""

import asyncio

import pytest

from plait.controlplane.alarms import (
    AlarmHub,
    AlarmLog,
    DeliveryState,
    TelemetryReport,
    UpstreamStats,
)
from plait.controlplane.alarms.delivery import RetryPolicy
from plait.model import parse_resource
from plait.testing.clock import FakeClock
from plait.testing.webhook import WebhookReceiver

pytestmark = pytest.mark.timeout(30)


def rule(url):
    return parse_resource({
        "apiVersion": "plait.io/v1alpha1", "kind": "AlarmRule", "metadata": {"name": "errors"},
        "spec": {"errorRate": {"service": "pricing", "threshold": 0.5, "minRequests": 10},
                 "webhook": {"url": url}, "cooldown": "1h"}})


async def until(condition, *, timeout=10.0):
    """Poll `condition` on the loop until true; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_the_tick_fires_a_rule_written_after_the_reports_and_delivery_follows():
    rules = []
    log = AlarmLog.open(None)
    hub = AlarmHub(rules=lambda: rules, log=log, now=FakeClock(), tick=0.01,
                   policy=RetryPolicy(base=0.01))

    async def scenario(receiver):
        task = asyncio.create_task(hub.run())
        try:
            report = TelemetryReport("web-1", "web", 5, {"pricing": UpstreamStats(20, 15)})
            assert hub.ingest_telemetry(report) == []  # no rule yet
            rules.append(rule(receiver.url))  # as if applied now
            await until(lambda: log.recent() and log.recent()[0].state is DeliveryState.DELIVERED)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    with WebhookReceiver((500, 200)) as receiver:
        asyncio.run(scenario(receiver))
        [alarm] = log.recent()
        assert (alarm.rule, alarm.attempts, alarm.last_status) == ("errors", 2, 200)
        assert [r.body["value"] for r in receiver.received] == [0.75, 0.75]
    log.close()


def test_without_the_task_alarms_are_recorded_and_left_pending():
    log = AlarmLog.open(None)
    hub = AlarmHub(rules=lambda: [rule("http://127.0.0.1:9/")], log=log, now=FakeClock())
    [alarm] = hub.ingest_telemetry(TelemetryReport("w", "web", 5, {"pricing": UpstreamStats(10, 9)}))
    assert alarm.state is DeliveryState.PENDING and alarm.attempts == 0
    log.close()
