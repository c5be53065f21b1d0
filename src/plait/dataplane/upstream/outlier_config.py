"""A cluster's `outlier_detection`, compiled: Envoy's fields and Plait's own metadata.

The consecutive rules are Envoy's fields as they are. The failure-rate rule takes what
Envoy's failure_percentage has: `failure_percentage_threshold` (the floor, in percent),
`failure_percentage_request_volume` (requests a host needs in the window to be judged),
`failure_percentage_minimum_hosts` (hosts with that many before anyone is judged), and
`enforcing_failure_percentage`. Every rule's `enforcing_*` is, as in Envoy, the chance in
percent that a host the rule finds is ejected; it is compiled once into a probability
(0..1] beside the rule, and a rule enforced at 0% is compiled as off (Envoy would still
count what it detects; here it detects nothing and costs nothing). Envoy has no field for
the two things Plait adds, so they travel in the cluster's metadata, under
`filter_metadata["plait.outlier"]`:

    failureRateRatio: 2       # a host must fail at least this many times as often as
                              # the rest of the cluster; 0 (the default): no comparison
    failureRateWindow: "30s"  # the sliding window (or a number of seconds); default:
                              # outlier_detection.interval, the period Envoy judges over

Unknown keys and values out of range are a ConfigError with the field path.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import json_format

from plait.core.errors import ConfigError
from plait.dataplane.config import FailureRate, OutlierDetection
from plait.dataplane.filters.typed_struct import Fields
from plait.xds.resources import duration

METADATA = "plait.outlier"
# A window of at least 100 ms keeps a bucket (a tenth) at 10 ms or more; an hour is
# longer than any ejection decision should take.
MIN_WINDOW, MAX_WINDOW = 0.1, 3600.0
MAX_RATIO = 1000.0
GATEWAY_THRESHOLD = 5  # Envoy's default consecutive_gateway_failure


def compile_outlier(c: cluster_pb2.Cluster, path: str) -> OutlierDetection | None:
    """The cluster's outlier detection, or None without `outlier_detection`."""
    meta_path = f"{path}.metadata.filter_metadata[{METADATA!r}]"
    if not c.HasField("outlier_detection"):
        if METADATA in c.metadata.filter_metadata:
            raise ConfigError(meta_path, "needs outlier_detection on the cluster")
        return None
    od = c.outlier_detection
    opath = f"{path}.outlier_detection"
    d = OutlierDetection()
    consecutive_5xx, enforcing_5xx = _consecutive(
        od, opath, "consecutive_5xx", threshold=d.consecutive_5xx, percent=100)
    # Envoy enforces the gateway rule at 0% unless told. Plait has always taken a
    # threshold given alone as the rule wanted (Istio sends both), and keeps doing so.
    gateway, enforcing_gateway = _consecutive(
        od, opath, "consecutive_gateway_failure", threshold=GATEWAY_THRESHOLD,
        percent=100 if od.HasField("consecutive_gateway_failure") else 0)
    interval = duration(od.interval) if od.HasField("interval") else d.interval
    return OutlierDetection(
        consecutive_5xx=consecutive_5xx,
        enforcing_consecutive_5xx=enforcing_5xx,
        consecutive_gateway_failure=gateway,
        enforcing_consecutive_gateway_failure=enforcing_gateway,
        interval=interval,
        base_ejection_time=(duration(od.base_ejection_time)
                            if od.HasField("base_ejection_time") else d.base_ejection_time),
        max_ejection_time=(duration(od.max_ejection_time)
                           if od.HasField("max_ejection_time") else d.max_ejection_time),
        max_ejection_percent=(od.max_ejection_percent.value
                              if od.HasField("max_ejection_percent")
                              else d.max_ejection_percent),
        failure_rate=_failure_rate(c, opath, meta_path, interval))


def _consecutive(od, opath: str, name: str, *, threshold: int,
                 percent: int) -> tuple[int, float]:
    """A consecutive rule's (failures in a row, chance of ejection); (0, 1.0) when it is
    off. `threshold` and `percent`: what an unset field means."""
    enforcing = f"enforcing_{name}"
    if getattr(od, enforcing).value > 100:
        raise ConfigError(f"{opath}.{enforcing}", "a percentage: 0..100")
    count = getattr(od, name).value if od.HasField(name) else threshold
    if od.HasField(enforcing):
        percent = getattr(od, enforcing).value
    if not count or not percent:
        return 0, 1.0
    return count, percent / 100


def _failure_rate(c: cluster_pb2.Cluster, opath: str, meta_path: str,
                  interval: float) -> FailureRate | None:
    od = c.outlier_detection
    d = FailureRate()
    for name in ("failure_percentage_threshold", "enforcing_failure_percentage"):
        if getattr(od, name).value > 100:
            raise ConfigError(f"{opath}.{name}", "a percentage: 0..100")
    ratio, window = 0.0, interval if interval > 0 else d.window
    meta = c.metadata.filter_metadata.get(METADATA)
    if meta is not None:  # checked even while the rule is off: a typo is never ignored
        fields = Fields(json_format.MessageToDict(meta), meta_path)
        ratio = fields.number("failureRateRatio", 0.0, lo=0.0, hi=MAX_RATIO)
        if 0 < ratio < 1:
            raise ConfigError(fields.at("failureRateRatio"),
                              "0 (no comparison) or at least 1: a host failing less often "
                              "than the rest is no outlier")
        window = fields.seconds("failureRateWindow", window, lo=MIN_WINDOW, hi=MAX_WINDOW)
        fields.done()
    if od.enforcing_failure_percentage.value == 0:  # Envoy's default: never enforced
        return None
    if not MIN_WINDOW <= window <= MAX_WINDOW:  # the interval, taken as the window
        raise ConfigError(f"{opath}.interval", f"as the failure-rate window, must be in "
                          f"{MIN_WINDOW:g}s..{MAX_WINDOW:g}s")

    def value(name: str, default: int) -> int:
        # 0 requests would judge hosts that have none; 0 hosts is the same as one
        return max(1, getattr(od, name).value) if od.HasField(name) else default

    return FailureRate(
        min_requests=value("failure_percentage_request_volume", d.min_requests),
        ratio=ratio,
        floor_percent=(float(od.failure_percentage_threshold.value)
                       if od.HasField("failure_percentage_threshold") else d.floor_percent),
        window=window,
        min_hosts=value("failure_percentage_minimum_hosts", d.min_hosts),
        enforcing=od.enforcing_failure_percentage.value / 100)
