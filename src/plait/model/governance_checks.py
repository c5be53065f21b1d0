"""Rules of the governance kinds that span fields, with the exact field path.

Like `plait.model.checks`: each runs on a resource that already passed pydantic and raises
`ConfigError(path, reason)` for the first problem. `CHECKS` maps each kind to its check
for `plait.model.parse`.
"""

from __future__ import annotations

from typing import Callable

from plait.core.errors import ConfigError
from plait.model.alarm_rule import AlarmRule
from plait.model.circuit_breaker import CircuitBreaker
from plait.model.degrade import Degrade
from plait.model.duration import parse_duration
from plait.model.failure_rate_ejection import MAX_WINDOW, MIN_WINDOW, FailureRateEjection
from plait.model.health_check import HealthCheck
from plait.model.rate_limit import RateLimit


def check_rate_limit(rl: RateLimit) -> None:
    seen: dict[tuple[str, float], int] = {}
    for i, rule in enumerate(rl.spec.rules):
        # Two buckets on the same key and period are one rule written twice, and the
        # stricter would silently win.
        same = (rule.key.lower(), rule.limit.per_seconds)
        if same in seen:
            raise ConfigError(
                f"spec.rules[{i}]",
                f"same key {rule.key!r} and period as spec.rules[{seen[same]}]; merge them",
            )
        seen[same] = i


def check_circuit_breaker(cb: CircuitBreaker) -> None:
    spec = cb.spec
    if spec.strategy == "errorCount":
        if spec.threshold < 1 or spec.threshold != int(spec.threshold):
            raise ConfigError("spec.threshold",
                              "with strategy errorCount, a whole number of at least 1")  # fmt: skip
    elif not 0 < spec.threshold <= 1:
        raise ConfigError(
            "spec.threshold", f"with strategy {spec.strategy}, a ratio above 0 and at most 1"
        )
    if spec.strategy == "slowRequestRatio" and spec.slow_request_threshold is None:
        raise ConfigError("spec.slowRequestThreshold",
                          "required with strategy slowRequestRatio")  # fmt: skip
    if spec.strategy != "slowRequestRatio" and spec.slow_request_threshold is not None:
        raise ConfigError("spec.slowRequestThreshold",
                          "only used with strategy slowRequestRatio")  # fmt: skip


def check_degrade(dg: Degrade) -> None:
    for i, trigger in enumerate(dg.spec.when):
        if trigger in dg.spec.when[:i]:
            raise ConfigError(f"spec.when[{i}]", f"{trigger!r} is listed twice")
    seen: dict[str, str] = {}
    for name in dg.spec.fallback.headers:
        if name.lower() in seen:
            raise ConfigError(
                f"spec.fallback.headers.{name}",
                f"same header as {seen[name.lower()]!r} (names ignore case)",
            )
        seen[name.lower()] = name


def check_alarm_rule(ar: AlarmRule) -> None:
    if ar.spec.events is not None:
        types = ar.spec.events.types
        for i, kind in enumerate(types):
            if kind in types[:i]:
                raise ConfigError(f"spec.events.types[{i}]", f"{kind!r} is listed twice")


def check_health_check(hc: HealthCheck) -> None:
    spec = hc.spec
    # Envoy's rule too: a check that may outlast the interval would overlap the next round.
    if parse_duration(spec.timeout) >= parse_duration(spec.interval):
        raise ConfigError("spec.timeout",
                          f"must be shorter than the interval ({spec.interval})")  # fmt: skip


def check_failure_rate_ejection(fre: FailureRateEjection) -> None:
    # Shorter, and ten buckets would hold too few requests to judge by; longer, and an
    # endpoint that broke is judged on what it did long before.
    if not MIN_WINDOW <= parse_duration(fre.spec.window) <= MAX_WINDOW:
        raise ConfigError("spec.window", "must be between 1s and 1h")


CHECKS: dict[str, Callable] = {
    "RateLimit": check_rate_limit,
    "CircuitBreaker": check_circuit_breaker,
    "Degrade": check_degrade,
    "AlarmRule": check_alarm_rule,
    "HealthCheck": check_health_check,
    "FailureRateEjection": check_failure_rate_ejection,
}
