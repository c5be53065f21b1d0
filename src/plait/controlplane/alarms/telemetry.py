"""Error rates per service over a sliding window, from the sidecars' periodic reports.

Each sidecar reports, every few seconds, what its app's calls to each upstream service
did since its last report (requests, errors, latency percentiles). The control plane
stamps a report with its own clock on arrival (sidecar clocks are not trusted to agree)
and adds its counts into one-second buckets per service, summed over every reporting
proxy. A window's totals are the sum of its buckets, so memory is bounded by services ×
seconds kept (`RETENTION`), however many proxies report. Reports should come much more
often than the shortest alarm window; a report counts wholly in the second it arrived.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from plait.model.alarm_rule import MAX_WINDOW_SECONDS

RETENTION = MAX_WINDOW_SECONDS  # the longest AlarmRule window
MAX_SERVICES = 1024  # services tracked at once; reports for more are counted and dropped
MAX_REPORTERS = 4096  # proxies remembered per service (for the reporter count)


@dataclass(frozen=True, slots=True)
class UpstreamStats:
    requests: int
    errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass(frozen=True, slots=True)
class TelemetryReport:
    node_id: str
    app: str
    window: float  # seconds the report covers
    upstreams: dict[str, UpstreamStats]


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    p99_ms_max: float | None = None  # the worst p99 any proxy reported (an upper bound)
    reporters: int = 0  # proxies that reported within the window

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(slots=True)
class _Bucket:
    second: int
    requests: int = 0
    errors: int = 0
    p99_ms_max: float | None = None


@dataclass(slots=True)
class _Service:
    buckets: deque[_Bucket] = field(default_factory=deque)
    reporters: dict[str, float] = field(default_factory=dict)  # node id → last report


class TelemetryWindow:
    """Per-service counts in one-second buckets on an injectable monotonic clock."""

    def __init__(self, *, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._services: dict[str, _Service] = {}
        self.dropped = 0  # upstream entries refused because MAX_SERVICES was reached

    def add(self, report: TelemetryReport) -> list[str]:
        """Count a report's upstreams; returns the services it touched."""
        now = self._now()
        second = int(now)
        touched = []
        for name, stats in report.upstreams.items():
            service = self._services.get(name)
            if service is None:
                self._prune(now)
                if len(self._services) >= MAX_SERVICES:
                    self.dropped += 1
                    continue
                service = self._services[name] = _Service()
            if not service.buckets or service.buckets[-1].second != second:
                service.buckets.append(_Bucket(second))
                while service.buckets[0].second < now - RETENTION - 1:
                    service.buckets.popleft()
            bucket = service.buckets[-1]
            bucket.requests += stats.requests
            bucket.errors += stats.errors
            if stats.p99_ms is not None:
                bucket.p99_ms_max = max(bucket.p99_ms_max or 0.0, stats.p99_ms)
            service.reporters.pop(report.node_id, None)  # re-insert: oldest stay first
            service.reporters[report.node_id] = now
            while len(service.reporters) > MAX_REPORTERS:
                del service.reporters[next(iter(service.reporters))]
            touched.append(name)
        return touched

    def totals(self, service: str, window: float) -> Totals:
        """What was reported for `service` in the last `window` seconds."""
        entry = self._services.get(service)
        if entry is None:
            return Totals()
        since = self._now() - window
        requests = errors = 0
        p99: float | None = None
        for bucket in reversed(entry.buckets):
            if bucket.second + 1 <= since:  # bucket s holds [s, s+1)
                break
            requests += bucket.requests
            errors += bucket.errors
            if bucket.p99_ms_max is not None:
                p99 = max(p99 or 0.0, bucket.p99_ms_max)
        reporters = sum(1 for t in entry.reporters.values() if t >= since)
        return Totals(requests, errors, p99, reporters)

    def services(self) -> list[str]:
        self._prune(self._now())
        return sorted(self._services)

    def _prune(self, now: float) -> None:
        oldest = now - RETENTION - 1
        for name in list(self._services):
            entry = self._services[name]
            while entry.buckets and entry.buckets[0].second < oldest:
                entry.buckets.popleft()
            for node in [n for n, t in entry.reporters.items() if t < oldest]:
                del entry.reporters[node]
            if not entry.buckets:
                del self._services[name]
