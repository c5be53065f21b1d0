"""One error vocabulary for the whole mesh.

Every failure the data plane generates itself has a `Reason`. The reason is mapped to a
wire status at one edge (HTTP here; gRPC and Dubbo codes beside it as those protocols
arrive), sent to the caller in `x-plait-error`, and written to the access log, so an
operator can always tell why a request failed. No anonymous 503s.
"""

from __future__ import annotations

import enum


class Reason(enum.Enum):
    """Why the sidecar answered a request itself. Values are the wire names."""

    BAD_REQUEST = "bad_request"
    HEADERS_TOO_LARGE = "headers_too_large"
    HEADERS_TIMEOUT = "request_headers_timeout"
    NO_ROUTE = "no_route"
    NO_CLUSTER = "no_cluster"
    NO_HEALTHY_UPSTREAM = "no_healthy_upstream"
    UPSTREAM_CONNECT_FAILURE = "upstream_connect_failure"
    UPSTREAM_RESET = "upstream_reset"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_PROTOCOL_ERROR = "upstream_protocol_error"
    OVERFLOW = "overflow"
    RATE_LIMITED = "rate_limited"
    CIRCUIT_OPEN = "circuit_open"
    DENIED = "denied"
    DRAINING = "draining"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    FAULT_ABORT = "fault_abort"


# The one HTTP edge. Statuses follow Envoy's choices for the same conditions.
HTTP_STATUS: dict[Reason, int] = {
    Reason.BAD_REQUEST: 400,
    Reason.HEADERS_TOO_LARGE: 431,
    Reason.HEADERS_TIMEOUT: 408,
    Reason.NO_ROUTE: 404,
    Reason.NO_CLUSTER: 503,
    Reason.NO_HEALTHY_UPSTREAM: 503,
    Reason.UPSTREAM_CONNECT_FAILURE: 503,
    Reason.UPSTREAM_RESET: 503,
    Reason.UPSTREAM_TIMEOUT: 504,
    Reason.UPSTREAM_PROTOCOL_ERROR: 502,
    Reason.OVERFLOW: 503,
    Reason.RATE_LIMITED: 429,
    Reason.CIRCUIT_OPEN: 503,
    Reason.DENIED: 403,
    Reason.DRAINING: 503,
    Reason.PAYLOAD_TOO_LARGE: 413,
    Reason.FAULT_ABORT: 503,
}

# gRPC status codes for the same reasons (grpc/status.h numbering).
GRPC_STATUS: dict[Reason, int] = {
    Reason.BAD_REQUEST: 13,
    Reason.HEADERS_TOO_LARGE: 8,
    Reason.HEADERS_TIMEOUT: 4,
    Reason.NO_ROUTE: 12,
    Reason.NO_CLUSTER: 14,
    Reason.NO_HEALTHY_UPSTREAM: 14,
    Reason.UPSTREAM_CONNECT_FAILURE: 14,
    Reason.UPSTREAM_RESET: 14,
    Reason.UPSTREAM_TIMEOUT: 4,
    Reason.UPSTREAM_PROTOCOL_ERROR: 13,
    Reason.OVERFLOW: 14,
    Reason.RATE_LIMITED: 8,
    Reason.CIRCUIT_OPEN: 14,
    Reason.DENIED: 7,
    Reason.DRAINING: 14,
    Reason.PAYLOAD_TOO_LARGE: 8,
    Reason.FAULT_ABORT: 14,
}


class PlaitError(Exception):
    """Base of the project's own exceptions."""


class ConfigError(PlaitError):
    """Configuration rejected at load time.

    `path` is the field path in the offending document (``listeners[0].address.port_value``),
    `reason` a sentence saying what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


class ProtocolError(PlaitError):
    """Bytes from a peer that break the protocol. Never escapes the data plane as a crash."""

    def __init__(self, message: str, *, reason: Reason = Reason.BAD_REQUEST) -> None:
        super().__init__(message)
        self.reason = reason
