"""Access log: one JSON line per request, with where the time went.

Lines are buffered and flushed by the worker's periodic sweep (and at exit), so logging
costs a dict and a `json.dumps`, not a system call, per request. Turned off entirely with
`--access-log off` (the benchmark configuration).
"""

from __future__ import annotations

import json
import sys
import time


_RBAC = "envoy.filters.http.rbac"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3) if seconds > 0 else 0.0


class AccessLog:
    def __init__(self, target: str) -> None:
        """`target`: "-" for stdout, else a file path opened for appending."""
        self._fh = sys.stdout if target == "-" else open(target, "a", buffering=1 << 16)
        self._own = target != "-"

    def write(self, listener: str, ex, now: float) -> None:
        req = ex.request
        start = ex.t_start
        sent = max(ex.t_request_end, ex.t_connected, start)
        entry = {
            "start_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - (now - start))),
            "listener": listener,
            "method": req.method.decode("latin-1"),
            "path": req.target.decode("latin-1"),
            "protocol": "HTTP/1.0" if req.http10 else "HTTP/1.1",
            "authority": req.host.decode("latin-1"),
            "code": ex.code,
            "error": ex.reason.value if ex.reason is not None else "",
            "route": ex.route.name if ex.route is not None else "",
            "cluster": ex.cluster.name if ex.cluster is not None else "",
            "upstream_host": ex.upstream_key,
            "attempts": ex.attempts,
            "bytes_received": ex.body_size,
            "bytes_sent": ex.bytes_sent,
            "timing_ms": {
                "downstream_read": _ms(ex.t_request_end - start) if ex.t_request_end else 0.0,
                "upstream_connect": _ms(ex.t_connected - ex.t_connect) if ex.t_connected else 0.0,
                "upstream_response": _ms(ex.t_first_byte - sent) if ex.t_first_byte else 0.0,
                "total": _ms(now - start),
            },
        }
        peer = ex.down.peer_identity
        if peer is not None:  # an mTLS peer: its SPIFFE ID ("" for a certificate without)
            entry["peer"] = peer
        state = ex.filter_state
        if state.__class__ is dict and _RBAC in state:  # the policy that decided or logged
            entry["rbac_policy"] = state[_RBAC]
        self._fh.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def write_protocol_error(self, listener: str, reason: str, detail: str, peer) -> None:
        entry = {"start_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                 "listener": listener, "code": 0, "error": reason, "detail": detail,
                 "downstream": f"{peer[0]}:{peer[1]}" if peer else ""}
        self._fh.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        try:
            self._fh.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.flush()
        if self._own:
            self._fh.close()
