"""Deciding when an AlarmRule fires: thresholds, minimum traffic, cooldown.

`errorRate` rules are level-triggered: whenever they are evaluated (on every telemetry
report for the service and on a periodic tick) and the window's error rate is at or above
the threshold with at least `minRequests` requests, they fire, unless the same rule
fired less than `cooldown` ago. A condition that stays bad thus repeats once per
cooldown, and one that flaps fires once per cooldown at most. `events` rules fire on
each matching event, with the cooldown kept per (rule, service, event type), so a storm
of ejections in one service is one alarm while a breaker opening in another is not
hidden by it.

No I/O and no task: the clock is injected, so every rule here is tested with a fake one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from plait.controlplane.alarms.events import GovernanceEvent
from plait.controlplane.alarms.telemetry import TelemetryWindow
from plait.model.alarm_rule import AlarmRule, Webhook
from plait.model.duration import parse_duration


@dataclass(frozen=True, slots=True)
class Firing:
    """One alarm, before it is recorded and delivered."""

    namespace: str
    rule: str  # the AlarmRule's name
    condition: str  # "errorRate" | "events"
    service: str
    webhook: Webhook
    value: float | None = None  # the error rate, for errorRate
    threshold: float | None = None
    window: float | None = None  # seconds
    requests: int | None = None
    errors: int | None = None
    event: GovernanceEvent | None = None

    def to_json(self) -> dict[str, Any]:
        """The firing as recorded and sent (without the webhook, whose headers may hold
        secrets)."""
        out: dict[str, Any] = {"rule": {"namespace": self.namespace, "name": self.rule},
                               "condition": self.condition, "service": self.service}  # fmt: skip
        if self.condition == "errorRate":
            out.update(value=self.value, threshold=self.threshold, window=self.window,
                       requests=self.requests, errors=self.errors)  # fmt: skip
        elif self.event is not None:
            out["event"] = self.event.to_json()
        return out


class Evaluator:
    def __init__(self, *, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._last_fired: dict[tuple, float] = {}  # cooldown key → when it last fired
        self._cooldowns: dict[tuple, float] = {}  # cooldown key → its cooldown, seconds

    def _ready(self, key: tuple, cooldown: float) -> bool:
        """True (and the cooldown restarted) if `key` may fire now."""
        now = self._now()
        last = self._last_fired.get(key)
        if last is not None and now - last < cooldown:
            return False
        self._last_fired[key] = now
        self._cooldowns[key] = cooldown
        return True

    def _forget_expired(self) -> None:
        # Bounds memory: a key whose cooldown is over behaves as if never seen.
        now = self._now()
        for key in [k for k, t in self._last_fired.items() if now - t >= self._cooldowns[k]]:
            del self._last_fired[key], self._cooldowns[key]

    def check_error_rates(self, rules: Iterable[AlarmRule], telemetry: TelemetryWindow, *,
                          services: Iterable[str] | None = None) -> list[Firing]:  # fmt: skip
        """Fire every errorRate rule (for `services` only, if given) whose condition holds."""
        self._forget_expired()
        only = None if services is None else set(services)
        fired = []
        for rule in rules:
            cond = rule.spec.error_rate
            if cond is None or (only is not None and cond.service not in only):
                continue
            window = parse_duration(cond.window)
            totals = telemetry.totals(cond.service, window)
            if totals.requests < cond.min_requests or totals.error_rate < cond.threshold:
                continue
            key = ("errorRate", rule.metadata.namespace, rule.metadata.name)
            if not self._ready(key, parse_duration(rule.spec.cooldown)):
                continue
            fired.append(Firing(rule.metadata.namespace, rule.metadata.name, "errorRate",
                                cond.service, rule.spec.webhook, value=totals.error_rate,
                                threshold=cond.threshold, window=window,
                                requests=totals.requests, errors=totals.errors))  # fmt: skip
        return fired

    def on_events(self, rules: Iterable[AlarmRule],
                  events: Iterable[GovernanceEvent]) -> list[Firing]:  # fmt: skip
        """Fire the events rules that `events` match, in event order."""
        self._forget_expired()
        watching = [r for r in rules if r.spec.events is not None]
        fired = []
        for event in events:
            for rule in watching:
                cond = rule.spec.events
                assert cond is not None
                if event.type not in cond.types:
                    continue
                if cond.service is not None and cond.service != event.service:
                    continue
                key = ("events", rule.metadata.namespace, rule.metadata.name,
                       event.service, event.type)  # fmt: skip
                if not self._ready(key, parse_duration(rule.spec.cooldown)):
                    continue
                fired.append(Firing(rule.metadata.namespace, rule.metadata.name, "events",
                                    event.service, rule.spec.webhook, event=event))  # fmt: skip
        return fired
