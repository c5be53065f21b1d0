"""Governance events and telemetry, from the sidecar to its control plane.

When the sidecar registers with a control plane, the main process runs a `Reporter`:
every `EVENTS_INTERVAL` it collects the events each worker held (`Worker.drain_events`,
over the worker channel for forked workers) and posts them in batches to
`POST {registry}/api/v1/events`; every `telemetry_interval` it posts one report to
`POST {registry}/api/v1/telemetry` with what the app's calls to each upstream service did
since the last report — requests, errors (5xx or no response) and latency p50/p99. The
report is a difference of two merged stats snapshots (the counters the admin endpoint
serves), so the request path does no work for it at all; percentiles are interpolated
within the duration histogram's buckets, as Prometheus' histogram_quantile does.

A control plane that is down or slow must not matter: posts run in this task only, with
a deadline; events wait in a bounded buffer (oldest dropped first, counted) and go out
once it answers; a batch it refuses as invalid (4xx) is dropped and counted rather than
retried forever. The same tick tells the registration whether the local app looks
unhealthy (every endpoint of an inbound cluster ejected or failing health checks), so
the registry can take this instance out of its callers' endpoints until it recovers.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from typing import Awaitable, Callable

from plait.dataplane.events import service_of
from plait.dataplane.http.client import ClientError, request_json
from plait.dataplane.stats import DURATION_BOUNDS

EVENTS_INTERVAL = 1.0  # seconds between event collections
TELEMETRY_INTERVAL = 5.0  # default seconds between telemetry reports
CAPACITY = 5000  # events held while the control plane does not take them
BATCH = 500  # events per request (the API takes up to 1000)
MAX_UPSTREAMS = 1000  # per report, as the API allows
MAX_WINDOW = 3600.0  # seconds a report may cover (the API's limit)


def quantile(q: float, counts: list[int]) -> float | None:
    """The q-quantile (seconds) of a duration histogram (DURATION_BOUNDS + overflow)."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(DURATION_BOUNDS):
                return DURATION_BOUNDS[-1]  # beyond the last bound: no better estimate
            lower = DURATION_BOUNDS[i - 1] if i else 0.0
            return lower + (DURATION_BOUNDS[i] - lower) * (rank - seen) / n
        seen += n
    return DURATION_BOUNDS[-1]


def upstream_report(prev: dict | None, cur: dict) -> dict[str, dict]:
    """Per upstream service, what happened between two merged stats snapshots:
    {service: {"requests", "errors", "p50Ms", "p99Ms"}}. Inbound clusters (calls into
    the local app) are left out: their callers report them."""
    before = prev["counters"] if prev else {}
    per: dict[str, list] = {}
    for key, value in cur["counters"].items():
        name, labels = key
        if name != "upstream_rq_total":
            continue
        lab = dict(labels)
        cluster = lab.get("cluster", "")
        if cluster.startswith("inbound|"):
            continue
        delta = value - before.get(key, 0)
        if delta <= 0:
            continue
        entry = per.setdefault(service_of(cluster), [0, 0, [0] * (len(DURATION_BOUNDS) + 1)])
        entry[0] += delta
        code = int(lab.get("code", "0"))
        if code == 0 or code >= 500:
            entry[1] += delta
    old_hists = prev["histograms"] if prev else {}
    for key, (counts, _) in cur["histograms"].items():
        name, labels = key
        if name != "upstream_rq_duration_seconds":
            continue
        entry = per.get(service_of(dict(labels).get("cluster", "")))
        if entry is None:
            continue
        old = old_hists.get(key, ([0] * len(counts), 0.0))[0]
        for i, (a, b) in enumerate(zip(counts, old)):
            entry[2][i] += max(0, a - b)
    out = {}
    for service, (requests, errors, hist) in sorted(per.items())[:MAX_UPSTREAMS]:
        item: dict = {"requests": requests, "errors": min(errors, requests)}
        for field, q in (("p50Ms", 0.5), ("p99Ms", 0.99)):
            seconds = quantile(q, hist)
            if seconds is not None:
                item[field] = round(seconds * 1000.0, 3)
        out[service] = item
    return out


class Reporter:
    """The main process's owned task that feeds the control plane (see module note)."""

    def __init__(self, *, registry: str, node_id: str, app: str,
                 stats: Callable[[], Awaitable[dict]],
                 gather: Callable[[], Awaitable[list[dict]]], counters,
                 set_healthy: Callable[[bool], None] | None = None,
                 telemetry_interval: float = TELEMETRY_INTERVAL, capacity: int = CAPACITY,
                 post=request_json, monotonic=time.monotonic) -> None:
        self.registry = registry.rstrip("/")
        self.node_id = node_id
        self.app = app or node_id or "unknown"
        self.stats = stats  # () -> merged stats snapshot of all workers
        self.gather = gather  # () -> [Worker.drain_events() of each worker]
        self.counters = counters  # the main worker's Stats: sent / dropped / failed
        self.set_healthy = set_healthy
        self.telemetry_interval = telemetry_interval
        self.pending: deque[dict] = deque(maxlen=capacity)
        self.post = post
        self.monotonic = monotonic
        self.baseline: dict | None = None
        self.baseline_at = monotonic()

    async def run(self) -> None:
        """Report until cancelled."""
        next_report = self.monotonic() + self.telemetry_interval
        while True:
            await asyncio.sleep(EVENTS_INTERVAL)
            try:
                await self.collect()
                await self.send_events()
                if self.monotonic() >= next_report:
                    next_report = self.monotonic() + self.telemetry_interval
                    await self.send_telemetry()
            except Exception as exc:  # a reporting bug must not end reporting, nor serving
                self.counters.reports_failed += 1
                print(f"plait sidecar: governance report failed: {exc!r}", file=sys.stderr,
                      flush=True)

    async def collect(self) -> None:
        """Take every worker's events; tell the registration about the app's health."""
        unhealthy = False
        for drained in await self.gather():
            self.counters.events_dropped += drained.get("dropped", 0)
            unhealthy = unhealthy or bool(drained.get("inbound_unhealthy"))
            for event in drained.get("events", ()):
                if len(self.pending) == self.pending.maxlen:
                    self.counters.events_dropped += 1
                event["service"] = event.get("service") or self.app
                event["nodeId"] = self.node_id or self.app
                self.pending.append(event)
        if self.set_healthy is not None:
            self.set_healthy(not unhealthy)

    async def send_events(self) -> None:
        """Post what is pending, a batch at a time, until done or refused."""
        url = f"{self.registry}/api/v1/events"
        while self.pending:
            batch = [self.pending[i] for i in range(min(BATCH, len(self.pending)))]
            try:
                status, _ = await self.post("POST", url, batch)
            except ClientError:
                self.counters.reports_failed += 1
                return  # the control plane is away: keep them for the next tick
            if status >= 500:
                self.counters.reports_failed += 1
                return
            for _ in batch:
                self.pending.popleft()
            if status >= 300:  # refused as invalid: retrying would not help
                self.counters.reports_failed += 1
                self.counters.events_dropped += len(batch)
            else:
                self.counters.events_sent += len(batch)

    async def send_telemetry(self) -> None:
        """Post what the app's calls did since the last report that got through."""
        now = self.monotonic()
        current = await self.stats()
        window = now - self.baseline_at
        upstreams = upstream_report(self.baseline, current)
        if not upstreams or window > MAX_WINDOW:
            self._advance(current, now)  # nothing to say, or too long ago to say it
            return
        body = {"nodeId": self.node_id or self.app, "app": self.app,
                "window": round(min(max(window, 0.001), MAX_WINDOW), 3),
                "upstreams": upstreams}
        try:
            status, _ = await self.post("POST", f"{self.registry}/api/v1/telemetry", body)
        except ClientError:
            self.counters.reports_failed += 1
            return  # the next report covers this one's window too
        if status >= 300:
            self.counters.reports_failed += 1
            if status >= 500:
                return
        self._advance(current, now)

    def _advance(self, snapshot: dict, now: float) -> None:
        self.baseline = snapshot
        self.baseline_at = now
