"""A clock that moves only when the test says so, for window, cooldown and lease logic.

Pass the instance wherever code takes `now: Callable[[], float]`; move it with
`advance(seconds)`. Starts at an arbitrary non-zero time so "0" is never special.
"""

from __future__ import annotations


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t
