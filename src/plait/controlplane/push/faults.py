"""Istio fault injection (VirtualService `http[].fault`) → Envoy's HTTPFault filter.

Every HttpConnectionManager Plait serves carries the fault filter before the router, with
an empty config that injects nothing (as Istio does), and a route with a `fault` carries
its own HTTPFault in `typed_per_filter_config`. So turning a fault on or off is a route
change only; no listener is rebuilt for a chaos drill. gRPC (gRFC A33) and the Plait
sidecar both read the filter in this shape.

Percentages: Istio injects into no request when `percentage` is left out, while Envoy's
and the sidecar's defaults differ, so the percentage is always written out.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from plait.controlplane.push.clusters import duration
from plait.controlplane.push.index import seconds

FAULT_FILTER = "envoy.filters.http.fault"
_GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip  (google.rpc.Code)


def listener_config() -> fault_pb2.HTTPFault:
    """The filter's own config on a listener: inject nothing until a route says so."""
    return fault_pb2.HTTPFault()


def set_route_fault(route: rc.Route, fault) -> None:
    """Attach the route's fault, if the VirtualService entry has one."""
    if fault is None:
        return
    config = fault_pb2.HTTPFault()
    if fault.delay is not None:
        config.delay.fixed_delay.CopyFrom(duration(seconds(fault.delay.fixed_delay)))
        _percent(config.delay.percentage, fault.delay.percentage)
    if fault.abort is not None:
        if fault.abort.http_status is not None:
            config.abort.http_status = fault.abort.http_status
        else:
            config.abort.grpc_status = grpc_code(fault.abort.grpc_status)
        _percent(config.abort.percentage, fault.abort.percentage)
    route.typed_per_filter_config[FAULT_FILTER].Pack(config)


def grpc_code(name: str) -> int:
    """Istio writes gRPC statuses by name ("UNAVAILABLE"); a number is taken as is.
    An unknown name becomes UNKNOWN (2), the status gRPC itself uses for the unknown."""
    text = name.strip().upper()
    return int(text) if text.isdigit() else _GRPC_CODES.get(text, 2)


def _percent(out: percent_pb2.FractionalPercent, istio) -> None:
    value = istio.value if istio is not None else 0.0
    out.numerator = round(value * 10_000)
    out.denominator = percent_pb2.FractionalPercent.MILLION
