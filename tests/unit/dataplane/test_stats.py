"""Stats: per-worker snapshots merge by summing, and the Prometheus text rendering is
accepted by prometheus_client's own parser with the values we put in."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from plait.dataplane.stats import DURATION_BOUNDS, Stats, merge, render_prometheus


def worker_stats(requests: int, code: int, seconds: float) -> Stats:
    s = Stats()
    lis = s.listener("outbound")
    lis.cx_total = 2
    lis.rq_total = requests
    lis.cx_active = 1
    lis.protocol_errors["bad_request"] = 1
    c = s.cluster('we"ird\\name')
    c.rq_by_code[code] = requests
    c.rq_retry = 1
    for _ in range(requests):
        c.duration.observe(seconds)
    s.host_source = lambda: [('we"ird\\name', "10.0.0.1:80", requests, 1)]
    return s


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_merge_sums_counters_gauges_and_histograms():
    merged = merge([worker_stats(3, 200, 0.002).snapshot(),
                    worker_stats(5, 200, 0.2).snapshot(),
                    worker_stats(7, 503, 0.2).snapshot()])
    counters = merged["counters"]
    assert counters[("downstream_rq_total", (("listener", "outbound"),))] == 15
    name = 'we"ird\\name'
    assert counters[("upstream_rq_total", (("cluster", name), ("code", "200")))] == 8
    assert counters[("upstream_rq_total", (("cluster", name), ("code", "503")))] == 7
    assert counters[("upstream_host_rq_total", (("cluster", name), ("host", "10.0.0.1:80")))] == 15
    assert merged["gauges"][("downstream_cx_active", (("listener", "outbound"),))] == 3
    counts, total = merged["histograms"][("upstream_rq_duration_seconds", (("cluster", name),))]
    assert sum(counts) == 15 and abs(total - (3 * 0.002 + 12 * 0.2)) < 1e-9


def test_prometheus_text_parses_with_the_same_values():
    merged = merge([worker_stats(3, 200, 0.002).snapshot(), worker_stats(5, 200, 0.2).snapshot()])
    got = samples(render_prometheus(merged))
    name = 'we"ird\\name'
    assert got[("plait_upstream_rq_total", (("cluster", name), ("code", "200")))] == 8
    assert got[("plait_downstream_protocol_error_total",
                (("listener", "outbound"), ("reason", "bad_request")))] == 2
    assert got[("plait_upstream_rq_retry_total", (("cluster", name),))] == 2
    assert got[("plait_config_update_total", ())] == 0
    lab = (("cluster", name),)
    assert got[("plait_upstream_rq_duration_seconds_count", lab)] == 8
    assert abs(got[("plait_upstream_rq_duration_seconds_sum", lab)] - 1.006) < 1e-9
    # Buckets are cumulative: 3 fall at or under 2.5 ms, all 8 under 250 ms and +Inf.
    def bucket(le: str) -> float:
        return got[("plait_upstream_rq_duration_seconds_bucket", tuple(sorted(lab + (("le", le),))))]
    assert bucket("0.001") == 0 and bucket("0.0025") == 3 and bucket("0.1") == 3
    assert bucket("0.25") == 8 and bucket("+Inf") == 8
    assert len([k for k in got if k[0] == "plait_upstream_rq_duration_seconds_bucket"]) == len(
        DURATION_BOUNDS) + 1


def test_every_family_is_typed_once():
    text = render_prometheus(merge([worker_stats(1, 200, 0.01).snapshot()] * 2))
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["plait_upstream_rq"] == "counter"
    assert families["plait_downstream_cx_active"] == "gauge"
    assert families["plait_upstream_rq_duration_seconds"] == "histogram"


def test_empty_stats_render_only_process_wide_series():
    got = samples(render_prometheus(merge([Stats().snapshot()])))
    assert got[("plait_config_update_total", ())] == 0
    assert all(labels == () for _, labels in got)


def test_outlier_ejections_by_reason_sum_across_workers_beside_the_total():
    def worker(reasons: dict, detected: dict) -> dict:
        s = Stats()
        c = s.cluster("c")
        c.outlier_ejections = sum(reasons.values())
        c.outlier_by_reason.update(reasons)
        c.outlier_detected_by_reason.update(detected)
        return s.snapshot()

    got = samples(render_prometheus(merge([
        worker({"failure_rate": 2}, {"failure_rate": 5}),
        worker({"failure_rate": 1, "consecutive_5xx": 1},
               {"failure_rate": 1, "consecutive_5xx": 2})])))
    assert got[("plait_outlier_ejections_total", (("cluster", "c"),))] == 4

    def by_reason(metric: str) -> dict:
        return {dict(labels)["reason"]: v for (name, labels), v in got.items()
                if name == metric}

    assert by_reason("plait_outlier_ejections_by_reason_total") == {
        "failure_rate": 3, "consecutive_5xx": 1}
    # found, ejected or spared by the enforcing chance
    assert by_reason("plait_outlier_ejections_detected_by_reason_total") == {
        "failure_rate": 6, "consecutive_5xx": 2}
