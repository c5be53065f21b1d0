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
"""

from __future__ import annotations

import asyncio

from plait.dataplane.config import OutlierDetection

_GATEWAY = frozenset((502, 503, 504))


class OutlierDetector:
    def __init__(self, config: OutlierDetection, cluster, *, on_event=None) -> None:
        self.config = config
        self.cluster = cluster
        self.on_event = on_event  # (kind, cluster name, host key) -> None
        self.ejections = 0
        self.returns = 0
        self._returned_at: dict[str, float] = {}  # host key -> loop time of its last return

    def observe(self, host, status: int) -> None:
        """One try's outcome on `host`: its status, or 0 when there was no response."""
        if status == 0:
            status = 503
        cfg = self.config
        if status >= 500:
            host.consecutive_5xx += 1
            if status in _GATEWAY:
                host.consecutive_gateway += 1
            else:
                host.consecutive_gateway = 0
            if not host.ejected and (
                    (cfg.consecutive_5xx and host.consecutive_5xx >= cfg.consecutive_5xx) or
                    (cfg.consecutive_gateway_failure
                     and host.consecutive_gateway >= cfg.consecutive_gateway_failure)):
                self._eject(host)
        else:
            host.consecutive_5xx = 0
            host.consecutive_gateway = 0

    def _eject(self, host) -> None:
        hosts = self.cluster.hosts
        ejected = sum(1 for h in hosts if h.ejected)
        if ejected and (ejected + 1) * 100.0 / len(hosts) > self.config.max_ejection_percent:
            return
        loop = asyncio.get_running_loop()
        returned = self._returned_at.pop(host.key, None)
        if returned is not None and self.config.interval > 0:
            healthy_intervals = int((loop.time() - returned) // self.config.interval)
            host.times_ejected = max(0, host.times_ejected - healthy_intervals)
        host.ejected = True
        host.times_ejected += 1
        host.consecutive_5xx = host.consecutive_gateway = 0
        self.ejections += 1
        self.cluster.stats.outlier_ejections += 1
        seconds = min(self.config.base_ejection_time * host.times_ejected,
                      max(self.config.max_ejection_time, self.config.base_ejection_time))
        loop.call_later(seconds, self._return, host)
        self.cluster.rebuild_lb()
        if self.on_event is not None:
            self.on_event("ejection", self.cluster.name, host.key)

    def _return(self, host) -> None:
        if not host.ejected:
            return
        host.ejected = False
        self._returned_at[host.key] = asyncio.get_running_loop().time()
        self.returns += 1
        self.cluster.stats.outlier_returns += 1
        self.cluster.rebuild_lb()
        if self.on_event is not None:
            self.on_event("return", self.cluster.name, host.key)
