"""Outlier detection: eject hosts that keep failing, let them back when their time is up.

Envoy's consecutive-5xx and consecutive-gateway-failure rules: a host whose responses (or
failures to respond: connect errors, resets and timeouts count as 503, as Envoy counts
local-origin errors when they are not split out) reach the threshold in a row is ejected for
base_ejection_time × (times ejected), at most max_ejection_time. At most
max_ejection_percent of the hosts are out at once — but one host may always be ejected, as
in current Envoy. A host that comes back with no new failures for a while has its ejection
count decay: one less per `interval` spent back in rotation, reckoned when it is next
ejected (so no timer runs for healthy hosts). Ejections and returns are counted and
reported as events.

The failure-rate rule (after Envoy's failure_percentage) catches a host that fails often
but never many times in a row: over a sliding window, a host with enough requests whose
share of failures is above a floor and a given multiple of the rest of the cluster's is
ejected the same way. The request path only adds to two counters on the host. A timer
the detector owns closes a bucket every window / BUCKETS seconds, slides each host's
window and judges; it runs only while the rule is configured, and the cluster manager
starts and stops it with the cluster.

Every rule ejects what it finds with its `enforcing_*` chance, as Envoy's enforcing_*
percentages do: a host found while max_ejection_percent leaves room is counted as
detected, then ejected if a draw of `random()` falls under the chance (no draw at 100%).
A host spared by the draw has spent the evidence it was found on, as in Envoy, so it is
not drawn for again on the same failures: a consecutive rule's run starts again, and the
failure-rate rule leaves the host unjudged until its window holds only what came after
(Envoy draws once per interval; this rule judges every bucket).
"""

from __future__ import annotations

import asyncio
import random as _random
from collections import deque
from typing import Callable

from plait.dataplane.config import OutlierDetection

_GATEWAY = frozenset((502, 503, 504))
# A window is ten buckets, as the circuit breaker's statWindow and the retry budget's.
BUCKETS = 10
# The reason labels of each rule's ejections
CONSECUTIVE_5XX = "consecutive_5xx"
CONSECUTIVE_GATEWAY = "consecutive_gateway_failure"
FAILURE_RATE = "failure_rate"


class Window:
    """One host's last BUCKETS buckets of (requests, failures), with their sums, and how
    many more buckets the host waits before it is judged again (after a spared draw)."""

    __slots__ = ("buckets", "requests", "failures", "held")

    def __init__(self) -> None:
        self.buckets: deque[tuple[int, int]] = deque(maxlen=BUCKETS)
        self.requests = 0
        self.failures = 0
        self.held = 0

    def push(self, requests: int, failures: int) -> None:
        """Add a closed bucket; the oldest slides out once there are BUCKETS."""
        if len(self.buckets) == BUCKETS:
            old_requests, old_failures = self.buckets[0]
            self.requests -= old_requests
            self.failures -= old_failures
        self.buckets.append((requests, failures))
        self.requests += requests
        self.failures += failures
        if self.held:
            self.held -= 1

    def clear(self) -> None:
        self.buckets.clear()
        self.requests = self.failures = self.held = 0


class OutlierDetector:
    def __init__(self, config: OutlierDetection, cluster, *, on_event=None,
                 random: Callable[[], float] = _random.random) -> None:
        self.config = config
        self.cluster = cluster
        self.on_event = on_event  # (kind, cluster name, host key) -> None
        self.random = random  # a float in [0, 1) per draw; tests pass a seeded one
        self.ejections = 0
        self.returns = 0
        self._returned_at: dict[str, float] = {}  # host key -> loop time of its last return
        self.windows: dict = {}  # Host -> Window, for the failure-rate rule
        self._timer: asyncio.TimerHandle | None = None
        self._next = 0.0  # loop time of the next tick

    def observe(self, host, status: int) -> None:
        """One try's outcome on `host`: its status, or 0 when there was no response."""
        if status and status < 500:  # the common case first, and as little as it needs:
            if self.config.failure_rate is not None:  # tries are counted for that rule only
                host.bucket_requests += 1
            if host.consecutive_5xx:  # (consecutive_gateway is never above it)
                host.consecutive_5xx = host.consecutive_gateway = 0
            return
        cfg = self.config
        if cfg.failure_rate is not None:
            host.bucket_requests += 1
            host.bucket_failures += 1
        if status == 0:
            status = 503
        host.consecutive_5xx += 1
        if status in _GATEWAY:
            host.consecutive_gateway += 1
        else:
            host.consecutive_gateway = 0
        if host.ejected:
            return
        if cfg.consecutive_5xx and host.consecutive_5xx >= cfg.consecutive_5xx:
            self._detect(host, CONSECUTIVE_5XX, cfg.enforcing_consecutive_5xx)
        elif (cfg.consecutive_gateway_failure
              and host.consecutive_gateway >= cfg.consecutive_gateway_failure):
            self._detect(host, CONSECUTIVE_GATEWAY, cfg.enforcing_consecutive_gateway_failure)

    # -- the failure-rate rule's timer ---------------------------------------------------

    @property
    def running(self) -> bool:
        return self._timer is not None

    def start(self) -> None:
        """Start ticking if the failure-rate rule is configured (and not yet ticking).
        Needs a running loop."""
        rule = self.config.failure_rate
        if rule is None or self._timer is not None:
            return
        for host in self.cluster.hosts:  # counted since who knows when: start afresh
            host.bucket_requests = host.bucket_failures = 0
        self.windows.clear()
        loop = asyncio.get_running_loop()
        self._next = loop.time() + rule.window / BUCKETS
        self._timer = loop.call_at(self._next, self._tick)

    def stop(self) -> None:
        """Stop ticking and forget the windows (the cluster went, or the rule did).
        Ejected hosts still come back when their time is up."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.windows.clear()

    def reconfigure(self, config: OutlierDetection) -> None:
        """Take a pushed config. The windows and the timer carry on unless the
        failure-rate rule itself changed; then they start afresh (or stop)."""
        changed = config.failure_rate != self.config.failure_rate
        self.config = config
        if changed:
            self.stop()
            self.start()

    def _tick(self) -> None:
        rule = self.config.failure_rate
        loop = asyncio.get_running_loop()
        # call_at on a fixed grid, so buckets do not stretch by the callbacks' lateness;
        # a loop that fell a whole bucket behind skips ahead rather than ticking in a burst.
        self._next = max(self._next + rule.window / BUCKETS, loop.time())
        self._timer = loop.call_at(self._next, self._tick)
        self.tick()

    def tick(self) -> None:
        """Close every host's current bucket, slide the windows, and eject the hosts the
        failure-rate rule finds (each with the rule's chance). Called by the timer; tests
        call it directly."""
        old = self.windows
        windows = {}
        for host in self.cluster.hosts:
            window = old.get(host)
            if window is None:
                window = Window()
            window.push(host.bucket_requests, host.bucket_failures)
            host.bucket_requests = host.bucket_failures = 0
            windows[host] = window
        self.windows = windows  # hosts that left the cluster are forgotten
        for host in self.outliers():
            self._detect(host, FAILURE_RATE, self.config.failure_rate.enforcing)

    def outliers(self) -> list:
        """The hosts the failure-rate rule finds now, the worst first (so that
        max_ejection_percent leaves out the better ones); not those it spared and still
        holds."""
        rule = self.config.failure_rate
        if rule is None:
            return []
        windows = self.windows
        total = failed = judged = 0
        for w in windows.values():
            total += w.requests
            failed += w.failures
            judged += w.requests >= rule.min_requests
        if judged < rule.min_hosts:
            return []
        found = []
        for host, w in windows.items():
            n, f = w.requests, w.failures
            # Compared cross-multiplied, in integers where the config is: exact at the edge.
            if (host.ejected or w.held or n < rule.min_requests or not f
                    or f * 100 < rule.floor_percent * n):
                continue
            if rule.ratio:
                rest_n, rest_f = total - n, failed - f
                if not rest_n or f * rest_n < rule.ratio * rest_f * n:
                    continue
            found.append((f / n, host))
        found.sort(key=lambda item: item[0], reverse=True)
        return [host for _, host in found]

    # -- ejection and return ------------------------------------------------------------

    def _detect(self, host, reason: str, enforcing: float) -> None:
        """`host` was found by the rule `reason`, enforced with chance `enforcing`: unless
        max_ejection_percent leaves no room (then nothing is decided but the overflow
        counted: the host is found again), count it, and eject it or spare it by the draw."""
        hosts = self.cluster.hosts
        ejected = sum(1 for h in hosts if h.ejected)
        if ejected and (ejected + 1) * 100.0 / len(hosts) > self.config.max_ejection_percent:
            self.cluster.stats.outlier_overflow += 1
            return
        detected = self.cluster.stats.outlier_detected_by_reason
        detected[reason] = detected.get(reason, 0) + 1
        if enforcing >= 1.0 or self.random() < enforcing:
            self._eject(host, reason)
        elif reason == FAILURE_RATE:
            self.windows[host].held = BUCKETS  # judged again on a window all new
        elif reason == CONSECUTIVE_5XX:  # a gateway run is part of the 5xx run
            host.consecutive_5xx = host.consecutive_gateway = 0
        else:
            host.consecutive_gateway = 0

    def _eject(self, host, reason: str) -> None:
        loop = asyncio.get_running_loop()
        returned = self._returned_at.pop(host.key, None)
        if returned is not None and self.config.interval > 0:
            healthy_intervals = int((loop.time() - returned) // self.config.interval)
            host.times_ejected = max(0, host.times_ejected - healthy_intervals)
        host.ejected = True
        host.times_ejected += 1
        host.consecutive_5xx = host.consecutive_gateway = 0
        self._forget(host)
        self.ejections += 1
        stats = self.cluster.stats
        stats.outlier_ejections += 1
        stats.outlier_by_reason[reason] = stats.outlier_by_reason.get(reason, 0) + 1
        seconds = min(self.config.base_ejection_time * host.times_ejected,
                      max(self.config.max_ejection_time, self.config.base_ejection_time))
        loop.call_later(seconds, self._return, host)
        self.cluster.rebuild_lb()
        if self.on_event is not None:
            self.on_event("ejection", self.cluster.name, host.key)

    def _forget(self, host) -> None:
        """Clear the host's failure-rate window: it is judged afresh when it is back."""
        host.bucket_requests = host.bucket_failures = 0
        window = self.windows.get(host)
        if window is not None:
            window.clear()

    def _return(self, host) -> None:
        if not host.ejected:
            return
        host.ejected = False
        self._forget(host)  # what it met while out (panic balancing) is not held against it
        self._returned_at[host.key] = asyncio.get_running_loop().time()
        self.returns += 1
        self.cluster.stats.outlier_returns += 1
        self.cluster.rebuild_lb()
        if self.on_event is not None:
            self.on_event("return", self.cluster.name, host.key)
