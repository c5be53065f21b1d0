"""Counters and histograms for the data plane, and their Prometheus text form.

The request path increments plain attributes and dict entries; nothing here allocates per
request beyond a dict slot the first time a status code is seen. Each worker process
turns its stats into a `snapshot()` (plain JSON-able lists); the admin endpoint merges the
snapshots of all workers and renders the sum, so one and many workers share one code path.
"""

from __future__ import annotations

from bisect import bisect_left

# Seconds. Envoy's default histogram buckets (0.5 ms .. 1 h), trimmed at 60 s.
DURATION_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(DURATION_BOUNDS, seconds)] += 1
        self.sum += seconds


class ListenerStats:
    __slots__ = ("name", "cx_total", "cx_active", "cx_overflow", "rq_total",
                 "protocol_errors", "local_replies", "counters", "labelled")

    def __init__(self, name: str) -> None:
        self.name = name
        self.cx_total = 0
        self.cx_active = 0
        self.cx_overflow = 0
        self.rq_total = 0
        self.protocol_errors: dict[str, int] = {}  # reason -> count
        self.local_replies: dict[str, int] = {}  # reason -> count
        self.counters: dict[str, int] = {}  # filters' own counters, by metric name
        # filters' counters with one label of their own: (metric, label, value) -> count
        self.labelled: dict[tuple[str, str, str], int] = {}

    def count(self, metric: str, n: int = 1) -> None:
        self.counters[metric] = self.counters.get(metric, 0) + n

    def count_by(self, metric: str, label: str, value: str, n: int = 1) -> None:
        key = (metric, label, value)
        self.labelled[key] = self.labelled.get(key, 0) + n


class ClusterStats:
    __slots__ = ("name", "rq_by_code", "duration", "cx_total", "cx_connect_fail",
                 "cx_connect_timeout", "rq_retry", "rq_retry_success", "rq_timeout",
                 "rq_reset", "rq_active", "rq_retry_budget_exhausted", "rq_mirror",
                 "rq_mirror_failed", "outlier_ejections", "outlier_by_reason",
                 "outlier_detected_by_reason", "outlier_overflow", "outlier_returns",
                 "lb_panic",
                 "cx_overflow", "rq_pending_overflow", "rq_pending_active", "rq_retry_overflow",
                 "hc_attempt", "hc_success", "hc_failure", "hc_ejections", "hc_returns")

    def __init__(self, name: str) -> None:
        self.name = name
        self.rq_by_code: dict[int, int] = {}
        self.duration = Histogram()
        self.cx_total = 0
        self.cx_connect_fail = 0
        self.cx_connect_timeout = 0
        self.rq_retry = 0
        self.rq_retry_success = 0
        self.rq_timeout = 0
        self.rq_reset = 0
        self.rq_active = 0
        self.rq_retry_budget_exhausted = 0
        self.rq_mirror = 0
        self.rq_mirror_failed = 0
        self.outlier_ejections = 0
        # rule -> ejections: consecutive_5xx, consecutive_gateway_failure, failure_rate
        self.outlier_by_reason: dict[str, int] = {}
        # rule -> outliers found with room to eject them: ejected, or spared by the
        # rule's enforcing chance (Envoy's ejections_detected_* beside _enforced_*)
        self.outlier_detected_by_reason: dict[str, int] = {}
        # outliers left in because max_ejection_percent had no room (Envoy's
        # ejections_overflow); one found again while there is none counts again
        self.outlier_overflow = 0
        self.outlier_returns = 0
        self.lb_panic = 0
        self.cx_overflow = 0  # a connection was wanted at max_connections
        self.rq_pending_overflow = 0  # refused: pending queue full, or max_requests
        self.rq_pending_active = 0
        self.rq_retry_overflow = 0  # a retry not made: max_retries in flight
        self.hc_attempt = 0
        self.hc_success = 0
        self.hc_failure = 0
        self.hc_ejections = 0  # hosts that failed unhealthy_threshold checks in a row
        self.hc_returns = 0  # hosts that passed healthy_threshold checks again


class Stats:
    """All stats of one worker. Cluster stats outlive config changes (keyed by name)."""

    def __init__(self) -> None:
        self.listeners: dict[str, ListenerStats] = {}
        self.clusters: dict[str, ClusterStats] = {}
        # () -> [(cluster, host, rq_total, cx_active)]; the cluster manager supplies it
        self.host_source = list
        self.config_updates = 0
        self.config_rejected = 0
        self.listener_bind_failures = 0
        # governance events and telemetry sent to the control plane (main process only)
        self.events_sent = 0
        self.events_dropped = 0
        self.reports_failed = 0

    def listener(self, name: str) -> ListenerStats:
        s = self.listeners.get(name)
        if s is None:
            s = self.listeners[name] = ListenerStats(name)
        return s

    def cluster(self, name: str) -> ClusterStats:
        s = self.clusters.get(name)
        if s is None:
            s = self.clusters[name] = ClusterStats(name)
        return s

    def snapshot(self) -> dict:
        """Plain counters and histograms, mergeable across workers."""
        counters: list = []
        gauges: list = []
        hists: list = []
        for ls in self.listeners.values():
            lab = {"listener": ls.name}
            counters += [("downstream_cx_total", lab, ls.cx_total),
                         ("downstream_cx_overflow_total", lab, ls.cx_overflow),
                         ("downstream_rq_total", lab, ls.rq_total)]
            gauges.append(("downstream_cx_active", lab, ls.cx_active))
            for reason, n in ls.protocol_errors.items():
                counters.append(("downstream_protocol_error_total", {**lab, "reason": reason}, n))
            for reason, n in ls.local_replies.items():
                counters.append(("local_reply_total", {**lab, "reason": reason}, n))
            for metric, n in ls.counters.items():
                counters.append((metric, lab, n))
            for (metric, label, value), n in ls.labelled.items():
                counters.append((metric, {**lab, label: value}, n))
        for cs in self.clusters.values():
            lab = {"cluster": cs.name}
            for code, n in cs.rq_by_code.items():
                counters.append(("upstream_rq_total", {**lab, "code": str(code)}, n))
            for reason, n in cs.outlier_by_reason.items():
                counters.append(("outlier_ejections_by_reason_total", {**lab, "reason": reason},
                                 n))
            for reason, n in cs.outlier_detected_by_reason.items():
                counters.append(("outlier_ejections_detected_by_reason_total",
                                 {**lab, "reason": reason}, n))
            counters += [("upstream_cx_total", lab, cs.cx_total),
                         ("upstream_cx_connect_fail_total", lab, cs.cx_connect_fail),
                         ("upstream_cx_connect_timeout_total", lab, cs.cx_connect_timeout),
                         ("upstream_rq_retry_total", lab, cs.rq_retry),
                         ("upstream_rq_retry_success_total", lab, cs.rq_retry_success),
                         ("upstream_rq_timeout_total", lab, cs.rq_timeout),
                         ("upstream_rq_reset_total", lab, cs.rq_reset),
                         ("upstream_rq_retry_budget_exhausted_total", lab,
                          cs.rq_retry_budget_exhausted),
                         ("upstream_rq_mirror_total", lab, cs.rq_mirror),
                         ("upstream_rq_mirror_failed_total", lab, cs.rq_mirror_failed),
                         ("outlier_ejections_total", lab, cs.outlier_ejections),
                         ("outlier_ejections_overflow_total", lab, cs.outlier_overflow),
                         ("outlier_returns_total", lab, cs.outlier_returns),
                         ("lb_healthy_panic_total", lab, cs.lb_panic),
                         ("upstream_cx_overflow_total", lab, cs.cx_overflow),
                         ("upstream_rq_pending_overflow_total", lab, cs.rq_pending_overflow),
                         ("upstream_rq_retry_overflow_total", lab, cs.rq_retry_overflow),
                         ("health_check_attempt_total", lab, cs.hc_attempt),
                         ("health_check_success_total", lab, cs.hc_success),
                         ("health_check_failure_total", lab, cs.hc_failure),
                         ("health_check_ejections_total", lab, cs.hc_ejections),
                         ("health_check_returns_total", lab, cs.hc_returns)]
            gauges.append(("upstream_rq_active", lab, cs.rq_active))
            gauges.append(("upstream_rq_pending_active", lab, cs.rq_pending_active))
            hists.append(("upstream_rq_duration_seconds", lab, list(cs.duration.counts),
                          cs.duration.sum))
        for cluster, host, rq, cx_active in self.host_source():
            lab = {"cluster": cluster, "host": host}
            counters.append(("upstream_host_rq_total", lab, rq))
            gauges.append(("upstream_host_cx_active", lab, cx_active))
        counters += [("config_update_total", {}, self.config_updates),
                     ("config_rejected_total", {}, self.config_rejected),
                     ("listener_bind_failure_total", {}, self.listener_bind_failures),
                     ("governance_events_sent_total", {}, self.events_sent),
                     ("governance_events_dropped_total", {}, self.events_dropped),
                     ("governance_reports_failed_total", {}, self.reports_failed)]
        return {"counters": counters, "gauges": gauges, "histograms": hists}


def merge(snapshots: list[dict]) -> dict:
    """Sum snapshots from several workers, series by series."""
    out: dict = {"counters": {}, "gauges": {}, "histograms": {}}
    for snap in snapshots:
        for kind in ("counters", "gauges"):
            acc = out[kind]
            for name, labels, value in snap[kind]:
                key = (name, tuple(sorted(labels.items())))
                acc[key] = acc.get(key, 0) + value
        acc = out["histograms"]
        for name, labels, counts, total in snap["histograms"]:
            key = (name, tuple(sorted(labels.items())))
            if key in acc:
                prev_counts, prev_sum = acc[key]
                acc[key] = ([a + b for a, b in zip(prev_counts, counts)], prev_sum + total)
            else:
                acc[key] = (list(counts), total)
    return out


_LE = tuple('le="%s"' % b for b in DURATION_BOUNDS) + ('le="+Inf"',)


def _labels(pairs: tuple, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in pairs]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(merged: dict, *, prefix: str = "plait_") -> str:
    """Prometheus text exposition format 0.0.4 of a merged snapshot."""
    lines: list[str] = []
    for kind, ptype in (("counters", "counter"), ("gauges", "gauge")):
        by_name: dict[str, list] = {}
        for (name, pairs), value in sorted(merged[kind].items()):
            by_name.setdefault(name, []).append((pairs, value))
        for name, series in by_name.items():
            full = prefix + name
            lines.append(f"# TYPE {full} {ptype}")
            for pairs, value in series:
                lines.append(f"{full}{_labels(pairs)} {value}")
    by_name = {}
    for (name, pairs), data in sorted(merged["histograms"].items()):
        by_name.setdefault(name, []).append((pairs, data))
    for name, series in by_name.items():
        full = prefix + name
        lines.append(f"# TYPE {full} histogram")
        for pairs, (counts, total) in series:
            running = 0
            for le, n in zip(_LE, counts):
                running += n
                lines.append(f"{full}_bucket{_labels(pairs, le)} {running}")
            lines.append(f"{full}_sum{_labels(pairs)} {total}")
            lines.append(f"{full}_count{_labels(pairs)} {running}")
    return "\n".join(lines) + "\n"
