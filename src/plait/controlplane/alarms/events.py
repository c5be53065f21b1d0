"""Governance events from the sidecars, kept in a bounded ring for operators to read.

A sidecar sends an event whenever one of its protections acts: an endpoint is ejected
(`ejection`) or returns (`return`), a breaker opens or closes, a degrade fallback is
served, a rate limit refuses. The ring keeps the newest `capacity` events in arrival
order; each gets a sequence number and the control plane's arrival time, since the
sidecar's own `time` comes from a clock nobody checked.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

DEFAULT_CAPACITY = 1000


@dataclass(frozen=True, slots=True)
class GovernanceEvent:
    type: str  # one of plait.model.alarm_rule.EVENT_TYPES
    service: str
    node_id: str
    time: float  # Unix seconds, by the sidecar's clock
    cluster: str | None = None
    host: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "service": self.service, "cluster": self.cluster,
                "host": self.host, "nodeId": self.node_id, "time": self.time,
                "detail": self.detail}  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    received_at: float  # Unix seconds, by the control plane's clock
    event: GovernanceEvent

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "receivedAt": self.received_at, **self.event.to_json()}


class EventLog:
    def __init__(self, *, capacity: int = DEFAULT_CAPACITY,
                 wall: Callable[[], float] = time.time) -> None:  # fmt: skip
        self._ring: deque[StoredEvent] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._wall = wall

    def add(self, events: list[GovernanceEvent]) -> None:
        received_at = self._wall()
        for event in events:
            self._ring.append(StoredEvent(next(self._seq), received_at, event))

    def recent(self, *, service: str | None = None, type: str | None = None,
               limit: int = 100) -> list[StoredEvent]:  # fmt: skip
        """The newest `limit` events matching the filters, oldest first."""
        out: list[StoredEvent] = []
        for stored in reversed(self._ring):
            if len(out) >= limit:
                break
            if service is not None and stored.event.service != service:
                continue
            if type is not None and stored.event.type != type:
                continue
            out.append(stored)
        out.reverse()
        return out
