"""Governance events of one worker, held until the main process collects them.

Whenever a protection acts — an endpoint is ejected by outlier detection or fails its
health checks (and when it returns), a breaker opens or closes — the worker records an
event in the control plane's shape (`POST /api/v1/events`: type, service, cluster, host,
time, detail; the main process adds the node id). Refusals that can come by the thousand
per second (rate limits, degrade fallbacks) are counted per type, rule and second instead,
and become one event each with the count in `detail`.

Everything is bounded: at most `capacity` events (the oldest dropped) and MAX_COUNTERS
aggregation keys; what is dropped is counted. The request path only ever calls `count`,
with a monotonic time it already read.
"""

from __future__ import annotations

import time
from collections import deque

CAPACITY = 1000
MAX_COUNTERS = 1000

# Cluster events (outlier detector, health checker) in the control plane's vocabulary,
# which has ejection and return for both; `detail.source` tells them apart.
_CLUSTER_EVENTS = {
    "ejection": ("ejection", "outlierDetection"),
    "return": ("return", "outlierDetection"),
    "hc_failed": ("ejection", "healthCheck"),
    "hc_passed": ("return", "healthCheck"),
}


def service_of(cluster: str) -> str:
    """The service a cluster stands for: the host of a Plait cluster name
    (`outbound|port|subset|host`, `inbound|port||app`), else the cluster name."""
    parts = cluster.split("|")
    if len(parts) == 4 and parts[0] in ("outbound", "inbound") and parts[3]:
        return parts[3]
    return cluster


class EventBuffer:
    def __init__(self, *, capacity: int = CAPACITY, wall=time.time,
                 monotonic=time.monotonic) -> None:
        self.events: deque[dict] = deque(maxlen=capacity)
        self.counters: dict[tuple[str, str, str, int], int] = {}
        self.dropped = 0
        self._wall = wall
        self._monotonic = monotonic
        self._offset = wall() - monotonic()  # monotonic -> Unix seconds

    def add(self, type: str, *, service: str = "", cluster: str | None = None,
            host: str | None = None, detail: dict | None = None) -> None:
        """Record one event now. `service` "" is filled in with the sidecar's app."""
        if len(self.events) == self.events.maxlen:
            self.dropped += 1
        self.events.append({"type": type, "service": service, "cluster": cluster,
                            "host": host, "time": round(self._wall(), 3),
                            "detail": detail or {}})

    def count(self, type: str, *, rule: str, service: str, now: float) -> None:
        """Count one refusal by `rule` at monotonic time `now`."""
        key = (type, service, rule, int(now + self._offset))
        n = self.counters.get(key)
        if n is not None:
            self.counters[key] = n + 1
        elif len(self.counters) < MAX_COUNTERS:
            self.counters[key] = 1
        else:
            self.dropped += 1

    def cluster_event(self, kind: str, cluster: str, host: str) -> None:
        """The cluster manager's `on_event` hook."""
        type, source = _CLUSTER_EVENTS.get(kind, (kind, ""))
        self.add(type, service=service_of(cluster), cluster=cluster, host=host,
                 detail={"source": source})

    def drain(self) -> dict:
        """Everything held, as JSON-able data, and forget it:
        {"events": [...], "dropped": n}."""
        out = list(self.events)
        for (type, service, rule, second), n in self.counters.items():
            out.append({"type": type, "service": service, "cluster": None, "host": None,
                        "time": float(second), "detail": {"rule": rule, "count": n}})
        dropped = self.dropped
        self.events.clear()
        self.counters.clear()
        self.dropped = 0
        self._offset = self._wall() - self._monotonic()
        return {"events": out, "dropped": dropped}
