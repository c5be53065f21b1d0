"""Fault injection (`envoy.filters.http.fault`): delay and abort a share of requests.

For chaos drills: a fixed delay for a percentage of requests, and/or an abort with an HTTP
status for a percentage, optionally only for requests whose headers match. As in Envoy,
the delay comes first, then the abort; a route's own fault config replaces the listener's.
Aborted requests carry `x-plait-error: fault_abort`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from envoy.extensions.filters.http.fault.v3.fault_pb2 import HTTPFault

from plait.core.errors import ConfigError, Reason
from plait.dataplane.matchers import header_match

NAME = "envoy.filters.http.fault"
_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}


@dataclass(frozen=True, slots=True)
class FaultConfig:
    delay: float = 0.0  # seconds
    delay_fraction: float = 0.0
    abort_status: int = 0
    abort_fraction: float = 0.0
    headers: tuple = ()  # HeaderMatch conditions


def _fraction(fp) -> float:
    return min(1.0, fp.numerator / _DENOMINATORS.get(fp.denominator, 100))


def compile_config(msg: HTTPFault, path: str) -> FaultConfig:
    out = {}
    if msg.HasField("delay"):
        d = msg.delay
        if not d.HasField("fixed_delay"):
            raise ConfigError(f"{path}.delay.fixed_delay", "required (header delays are not supported)")
        out["delay"] = d.fixed_delay.seconds + d.fixed_delay.nanos / 1e9
        out["delay_fraction"] = _fraction(d.percentage) if d.HasField("percentage") else 1.0
    if msg.HasField("abort"):
        a = msg.abort
        if a.WhichOneof("error_type") != "http_status":
            raise ConfigError(f"{path}.abort", "only http_status aborts are supported")
        if not 200 <= a.http_status <= 599:
            raise ConfigError(f"{path}.abort.http_status", "must be 200..599")
        out["abort_status"] = a.http_status
        out["abort_fraction"] = _fraction(a.percentage) if a.HasField("percentage") else 1.0
    out["headers"] = tuple(header_match(h, f"{path}.headers[{i}]")
                           for i, h in enumerate(msg.headers))
    return FaultConfig(**out)


class FaultFilter:
    __slots__ = ("config",)

    def __init__(self, config: FaultConfig | None) -> None:
        self.config = config

    def on_request(self, ex) -> bool:
        cfg = ex.route.per_filter.get(NAME, self.config) if ex.route is not None else self.config
        if cfg is None:
            return True
        if cfg.headers and not ex.headers_match(cfg.headers):
            return True
        abort = cfg.abort_fraction and random.random() < cfg.abort_fraction
        if cfg.delay_fraction and random.random() < cfg.delay_fraction:
            ex.mgr.stats.count("fault_delays_total")
            ex.mgr.loop.call_later(cfg.delay, self._after_delay, ex, cfg if abort else None)
            return False
        if abort:
            self._abort(ex, cfg)
            return False
        return True

    def _after_delay(self, ex, abort_cfg) -> None:
        if ex.finished:
            return  # the client went away during the delay
        if abort_cfg is not None:
            self._abort(ex, abort_cfg)
        else:
            ex.resume()
        ex.down.flush()

    def _abort(self, ex, cfg: FaultConfig) -> None:
        ex.mgr.stats.count("fault_aborts_total")
        ex.local_reply(Reason.FAULT_ABORT, status=cfg.abort_status)
