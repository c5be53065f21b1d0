"""A stand-in exchange for unit tests of HTTP filters.

Why: a filter talks to its request only through the exchange's small surface (the
request head, the route, the manager's stats and events, `local_reply`, `direct_reply`,
`filter_state`, and at the end `code` and `t_start`), so a filter can be tested without
sockets by handing it this object and reading what it answered.

How: `FakeExchange(method=, target=, headers=, per_filter=, peer=)` builds the request;
`replies` records each answer as ("local", reason, status) or ("direct", status, body,
headers); `finish(code, at=)` sets the outcome and calls every filter's `on_complete`.
"""

from __future__ import annotations

from types import SimpleNamespace

from plait.dataplane.events import EventBuffer
from plait.dataplane.router import headers_match
from plait.dataplane.stats import ListenerStats


class FakeExchange:
    def __init__(self, *, method: bytes = b"GET", target: bytes = b"/",
                 headers: list[tuple[bytes, bytes]] = (), per_filter: dict | None = None,
                 peer: bytes | None = b"10.0.0.1", start: float = 0.0, mgr=None) -> None:
        self.request = SimpleNamespace(method=method, target=target, headers=list(headers),
                                       host=b"svc")
        self.route = SimpleNamespace(per_filter=per_filter or {})
        self.mgr = mgr or SimpleNamespace(stats=ListenerStats("l"),
                                          events=EventBuffer(wall=lambda: 1e9,
                                                             monotonic=lambda: 0.0))
        self.down = SimpleNamespace(peer_ip=lambda: peer)
        self.filter_state = None
        self.reason = None
        self.code = 0
        self.t_start = start
        self.replies: list[tuple] = []

    def headers_match(self, conditions) -> bool:
        return headers_match(conditions, self.request)

    def local_reply(self, reason, *, status: int = 0) -> None:
        self.reason = reason
        self.replies.append(("local", reason, status))

    def direct_reply(self, status: int, body: bytes, *, extra=()) -> None:
        self.code = status
        self.replies.append(("direct", status, body, tuple(extra)))

    def finish(self, code: int, *filters) -> None:
        self.code = code
        for f in filters:
            f.on_complete(self)
