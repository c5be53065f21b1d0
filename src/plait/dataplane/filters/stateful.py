"""What the filters that keep state across requests share: the state carried over a push.

A rate limit's token buckets and a circuit breaker's breakers live in the filter's
`states`, keyed by rule. A config push builds a new filter; `adopt` hands it the old one's
states, so a push neither refills the buckets nor closes an open breaker. `clock` is the
time source, replaceable in tests.
"""

from __future__ import annotations

import time


class StatefulFilter:
    __slots__ = ("config", "states", "clock")

    def __init__(self, config, *, clock=time.monotonic) -> None:
        self.config = config
        self.states = self.new_states()
        self.clock = clock

    @staticmethod
    def new_states() -> dict:
        return {}

    def adopt(self, previous: StatefulFilter) -> None:
        """Carry the states over from the filter this one replaces (a config push)."""
        self.states = previous.states
