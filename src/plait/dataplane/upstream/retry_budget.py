"""A retry budget per cluster: retries may add at most a share of the traffic.

Over a sliding window, retries are allowed while
    retries < ratio × requests + min_per_second × window
(Linkerd's budget; defaults 20% + 10/s over 10 s). A failing upstream therefore never sees
a retry storm: once the budget is spent, failures go straight back to the caller. The
window is a ring of buckets rotated by the worker's sweep, so counting costs one addition
per request and no clock read.
"""

from __future__ import annotations

from collections import deque

from plait.dataplane.config import RetryBudget


class RetryBudgetState:
    __slots__ = ("config", "stats", "requests", "retries", "denied", "_old_requests",
                 "_old_retries", "_history")

    def __init__(self, config: RetryBudget, bucket_seconds: float, stats) -> None:
        self.config = config
        self.stats = stats
        self.requests = 0  # in the current bucket
        self.retries = 0
        self.denied = 0
        buckets = max(1, round(config.window / bucket_seconds))
        self._history: deque = deque([(0, 0)] * (buckets - 1), maxlen=max(buckets - 1, 0))
        self._old_requests = 0
        self._old_retries = 0

    def allow(self) -> bool:
        """Spend one retry if the budget has room; count a denial if not."""
        cfg = self.config
        requests = self._old_requests + self.requests
        retries = self._old_retries + self.retries
        if retries < cfg.ratio * requests + cfg.min_per_second * cfg.window:
            self.retries += 1
            return True
        self.denied += 1
        self.stats.rq_retry_budget_exhausted += 1
        return False

    def rotate(self) -> None:
        """Close the current bucket (called once per sweep)."""
        history = self._history
        if history.maxlen:
            old_req, old_ret = history[0]
            self._old_requests += self.requests - old_req
            self._old_retries += self.retries - old_ret
            history.append((self.requests, self.retries))
        self.requests = 0
        self.retries = 0
