"""Route timeouts without a timer per request.

An event-loop timer costs a handle, a heap insertion and a cancellation per request, which
is a noticeable share of a request's work here. Instead, each exchange with a route timeout
is filed under the 50 ms slot its deadline falls in, and a ticker expires whole slots: adding
is a dict probe and a set operation, removing a set operation, and a timeout fires at most
one slot (50 ms) late. The ticker runs only while some slot is filed: an idle worker is not
woken twenty times a second for nothing. Shorter, per-try timeouts still use loop timers
(they exist only when configured).
"""

from __future__ import annotations

import asyncio
import time

RESOLUTION = 0.05  # seconds per slot; the largest delay a timeout can fire with


class Deadlines:
    __slots__ = ("slots", "_idle")

    def __init__(self) -> None:
        self.slots: dict[int, set] = {}
        self._idle: asyncio.Future | None = None  # the ticker waits on it while no slot is filed

    def add(self, item, deadline: float) -> set:
        """File `item` (it has `on_timeout()`) under `deadline`. Returns the slot, a set:
        `slot.discard(item)` takes the item out again (harmless once the slot expired)."""
        key = int(deadline / RESOLUTION) + 1
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = set()
            idle = self._idle
            if idle is not None:  # wake the ticker
                self._idle = None
                if not idle.done():
                    idle.set_result(None)
        slot.add(item)
        return slot

    def expire(self, now: float) -> None:
        """Time out everything whose slot has passed."""
        limit = int(now / RESOLUTION)
        due = [k for k in self.slots if k <= limit]
        for key in sorted(due):
            for item in self.slots.pop(key):
                item.on_timeout()

    async def tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.slots:  # nothing can time out: sleep until add() files something
                self._idle = loop.create_future()
                await self._idle
            await asyncio.sleep(RESOLUTION)
            self.expire(time.monotonic())
