"""Counters of the security edge: refused requests by reason, issued certificates.

Plain integers on the event loop; served at `GET /api/v1/auth/counters` so an operator
(or an alarm) sees a burst of bad tokens or refused CSRs.
"""

from __future__ import annotations

from collections import Counter


class Counters:
    def __init__(self) -> None:
        self._c: Counter[str] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        self._c[name] += n

    def get(self, name: str) -> int:
        return self._c[name]

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self._c.items()))
