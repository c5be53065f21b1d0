"""The governance hub: events and telemetry in, alarms out.

The API hands every batch of events and every telemetry report to the hub, which keeps
them (bounded), evaluates the current AlarmRules against them at once, records each
firing in the alarm log and queues it for delivery. `run()` is the hub's one owned task:
it evaluates errorRate rules on a tick (windows slide even when no report comes) and
delivers queued alarms, at most `max_concurrent` at a time, each with its own retries.
`open_alarm_hub` wires it for `plait control`: opens the log, starts `run()`, and on
exit cancels it and closes the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import AsyncIterator, Callable, Iterable

import httpx

from plait.controlplane.alarms.delivery import Attempt, RetryPolicy, deliver
from plait.controlplane.alarms.evaluate import Evaluator, Firing
from plait.controlplane.alarms.events import EventLog, GovernanceEvent
from plait.controlplane.alarms.log import Alarm, AlarmLog, DeliveryState
from plait.controlplane.alarms.telemetry import TelemetryReport, TelemetryWindow
from plait.controlplane.store import Store
from plait.model.alarm_rule import AlarmRule, Webhook

MAX_QUEUED = 1000  # alarms waiting for a delivery slot; beyond this they fail at once
USER_AGENT = "plait-control"


class AlarmHub:
    def __init__(self, *, rules: Callable[[], Iterable[AlarmRule]], log: AlarmLog,
                 now: Callable[[], float] = time.monotonic, policy: RetryPolicy = RetryPolicy(),
                 tick: float = 1.0, max_concurrent: int = 8) -> None:  # fmt: skip
        self._rules = rules
        self.log = log
        self.events = EventLog()
        self.telemetry = TelemetryWindow(now=now)
        self.evaluator = Evaluator(now=now)
        self._policy = policy
        self._tick = tick
        self._max_concurrent = max_concurrent
        self._queue: asyncio.Queue[tuple[Alarm, Webhook]] | None = None  # while running

    # --- called by the API --------------------------------------------------------------

    def ingest_events(self, events: list[GovernanceEvent]) -> list[Alarm]:
        """Keep the events and fire the events rules they match; returns the new alarms."""
        self.events.add(events)
        return self._record(self.evaluator.on_events(list(self._rules()), events))

    def ingest_telemetry(self, report: TelemetryReport) -> list[Alarm]:
        """Count a report and evaluate the errorRate rules of the services it touched."""
        touched = self.telemetry.add(report)
        rules = list(self._rules())
        return self._record(self.evaluator.check_error_rates(rules, self.telemetry,
                                                             services=touched))  # fmt: skip

    def evaluate(self) -> list[Alarm]:
        """Evaluate every errorRate rule now (the tick does this each `tick` seconds)."""
        return self._record(self.evaluator.check_error_rates(list(self._rules()), self.telemetry))

    # --- recording and delivery ---------------------------------------------------------

    def _record(self, firings: list[Firing]) -> list[Alarm]:
        alarms = []
        for firing in firings:
            alarm = self.log.add(namespace=firing.namespace, rule=firing.rule,
                                 condition=firing.condition, service=firing.service,
                                 firing=firing.to_json())  # fmt: skip
            alarms.append(alarm)
            if self._queue is None:
                continue  # not running (tests of the API alone): stays pending
            if self._queue.qsize() >= MAX_QUEUED:
                self.log.update(alarm.id, state=DeliveryState.FAILED, attempts=0,
                                last_status=None, last_error="too many alarms queued")  # fmt: skip
                continue
            self._queue.put_nowait((alarm, firing.webhook))
        return alarms

    async def _deliver(self, client: httpx.AsyncClient, alarm: Alarm, webhook: Webhook) -> None:
        payload = {k: v for k, v in alarm.to_json().items() if k != "delivery"}

        def record(attempt: Attempt) -> None:
            self.log.update(alarm.id, state=attempt.state, attempts=attempt.number,
                            last_status=attempt.status, last_error=attempt.error)  # fmt: skip

        try:
            await deliver(client, webhook, payload, alarm_id=alarm.id, policy=self._policy,
                          on_attempt=record)  # fmt: skip
        except Exception as exc:  # e.g. the log's disk: one alarm, not all delivery, is lost
            print(f"plait: delivering alarm {alarm.id} failed: {exc!r}", file=sys.stderr)

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                self.evaluate()
            except Exception as exc:  # a bad rule or a full disk must not stop delivery
                print(f"plait: alarm evaluation failed: {exc!r}", file=sys.stderr)

    async def run(self) -> None:
        """Evaluate on the tick and deliver queued alarms until cancelled."""
        self._queue = asyncio.Queue()
        slots = asyncio.Semaphore(self._max_concurrent)
        try:
            async with (httpx.AsyncClient(headers={"user-agent": USER_AGENT}) as client,
                        asyncio.TaskGroup() as tg):
                tg.create_task(self._ticks(), name="alarm-ticks")
                while True:
                    alarm, webhook = await self._queue.get()
                    await slots.acquire()
                    task = tg.create_task(self._deliver(client, alarm, webhook),
                                          name=f"alarm-{alarm.id}")  # fmt: skip
                    task.add_done_callback(lambda _: slots.release())
        finally:
            self._queue = None


def _report_crash(task: asyncio.Task) -> None:
    # Said when it happens, not at shutdown; alarms are then recorded but stay pending.
    if not task.cancelled() and task.exception() is not None:
        print(f"plait: alarm delivery stopped: {task.exception()!r}", file=sys.stderr)


@contextlib.asynccontextmanager
async def open_alarm_hub(data_dir: str | os.PathLike, store: Store) -> AsyncIterator[AlarmHub]:
    """The hub of a running control plane, its log in `data_dir`, its rules from `store`.

    Raises PlaitError if the alarm log cannot be opened.
    """
    log = AlarmLog.open(data_dir)
    try:
        hub = AlarmHub(rules=lambda: [r.resource for r in store.current("AlarmRule")], log=log)
        task = asyncio.create_task(hub.run(), name="alarms")
        task.add_done_callback(_report_crash)
        try:
            yield hub
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        log.close()
