"""What every connected proxy has been sent, what it accepted, and how long that took.

The ADS streams write here as they go; `proxy_status()` reads it for the REST API
(`GET /api/v1/proxies`) and the CLI's `proxy-status`. An operator can tell from one row
whether a change has reached a proxy (`synced`), how long it took (`push_latency_ms`:
response sent → ACK received; `change_to_ack_ms`: the mesh change that caused the push →
ACK, debounce included) and why a proxy refused one (`last_nack`).

Times shown are wall-clock RFC 3339; latencies are measured on the monotonic clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from plait.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

# Short names an operator knows from Envoy's admin page and istioctl.
SHORT = {LISTENER: "listeners", ROUTE: "routes", CLUSTER: "clusters", ENDPOINT: "endpoints"}


def _stamp(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class Nack:
    version: str
    error: str
    at: float  # wall clock


@dataclass(slots=True)
class TypeStatus:
    """One type URL on one stream: the subscription and the push/ACK ledger."""

    type_url: str
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    nonce: str = ""
    version_sent: str = ""
    resources_sent: int = 0
    sent_at: float | None = None  # monotonic
    sent_wall: float | None = None
    change_at: float | None = None  # monotonic: the mesh change behind the last push
    version_acked: str = ""
    acked_at: float | None = None  # monotonic
    acked_wall: float | None = None
    push_latency_ms: float | None = None
    change_to_ack_ms: float | None = None
    last_nack: Nack | None = None

    @property
    def synced(self) -> bool:
        return self.version_sent == self.version_acked

    def as_dict(self) -> dict:
        return {
            "subscribed": ["*"] if self.wildcard else sorted(self.names),
            "version_sent": self.version_sent,
            "version_acked": self.version_acked,
            "resources": self.resources_sent,
            "sent_at": _stamp(self.sent_wall),
            "acked_at": _stamp(self.acked_wall),
            "push_latency_ms": self.push_latency_ms,
            "change_to_ack_ms": self.change_to_ack_ms,
            "synced": self.synced,
            "last_nack": None if self.last_nack is None else {
                "version": self.last_nack.version,
                "error": self.last_nack.error,
                "at": _stamp(self.last_nack.at),
            },
        }


@dataclass(slots=True)
class ProxyRecord:
    stream_id: int
    peer: str
    connected_wall: float
    node_id: str = ""
    app: str = ""
    mode: str = "unknown"  # sidecar | proxyless, decided by its Listener subscription
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def type_status(self, type_url: str) -> TypeStatus:
        found = self.types.get(type_url)
        if found is None:
            found = self.types[type_url] = TypeStatus(type_url)
        return found

    def as_dict(self) -> dict:
        return {
            "node_id": self.node_id,
            "app": self.app,
            "mode": self.mode,
            "peer": self.peer,
            "stream_id": self.stream_id,
            "connected_since": _stamp(self.connected_wall),
            "synced": all(t.synced for t in self.types.values()),
            "types": {SHORT.get(url, url): t.as_dict() for url, t in sorted(self.types.items())},
        }


COUNTERS = ("streams_opened", "streams_closed", "requests", "pushes", "acks", "nacks",
            "stale_requests", "malformed_requests", "unknown_type_requests",
            "translate_errors", "mesh_revisions")


class PushStatus:
    """The ledger shared by every stream of one push server."""

    def __init__(self) -> None:
        self._records: dict[int, ProxyRecord] = {}
        self._next_id = 0
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def connect(self, peer: str) -> ProxyRecord:
        self._next_id += 1
        record = ProxyRecord(stream_id=self._next_id, peer=peer, connected_wall=time.time())
        self._records[record.stream_id] = record
        self.count("streams_opened")
        return record

    def disconnect(self, record: ProxyRecord) -> None:
        if self._records.pop(record.stream_id, None) is not None:
            self.count("streams_closed")

    def records(self) -> list[ProxyRecord]:
        return list(self._records.values())

    def proxy_status(self) -> list[dict]:
        """One dict per connected stream, by node id: see the module comment."""
        rows = sorted(self._records.values(), key=lambda r: (r.node_id, r.stream_id))
        return [r.as_dict() for r in rows]

    def counters(self) -> dict[str, int]:
        return {**self.counts, "connected_proxies": len(self._records)}
