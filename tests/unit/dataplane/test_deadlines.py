"""Route timeouts filed in 50 ms slots: what expires, when, and what was taken out."""

from __future__ import annotations

import asyncio
import time

from plait.dataplane.deadlines import RESOLUTION, Deadlines


class Item:
    def __init__(self) -> None:
        self.timed_out = 0

    def on_timeout(self) -> None:
        self.timed_out += 1


def test_an_item_times_out_once_its_slot_has_passed_and_not_before():
    deadlines = Deadlines()
    item = Item()
    deadlines.add(item, 10.0)
    deadlines.expire(10.0 - RESOLUTION)
    assert item.timed_out == 0
    deadlines.expire(10.0 + RESOLUTION)
    assert item.timed_out == 1
    deadlines.expire(20.0)
    assert item.timed_out == 1 and not deadlines.slots


def test_an_item_discarded_from_its_slot_never_times_out():
    deadlines = Deadlines()
    kept, taken = Item(), Item()
    deadlines.add(kept, 10.0)
    slot = deadlines.add(taken, 10.0)
    slot.discard(taken)
    deadlines.expire(11.0)
    assert (kept.timed_out, taken.timed_out) == (1, 0)
    slot.discard(taken)  # again, after the slot expired: harmless


def test_slots_expire_in_deadline_order():
    deadlines = Deadlines()
    order = []
    for when in (3.0, 1.0, 2.0):
        item = Item()
        item.on_timeout = lambda when=when: order.append(when)
        deadlines.add(item, when)
    deadlines.expire(5.0)
    assert order == [1.0, 2.0, 3.0]


def test_the_ticker_sleeps_while_nothing_is_filed_and_wakes_for_a_deadline():
    async def main() -> None:
        deadlines = Deadlines()
        ticker = asyncio.get_running_loop().create_task(deadlines.tick_forever())
        try:
            await asyncio.sleep(0)  # the ticker's first step: no slot, so it waits
            assert deadlines._idle is not None and not deadlines._idle.done()
            fired = asyncio.Event()
            item = Item()
            item.on_timeout = fired.set
            deadlines.add(item, time.monotonic())
            await asyncio.wait_for(fired.wait(), 5)
            # the slot expired and nothing else is filed: waiting again, not ticking
            assert not deadlines.slots
            assert deadlines._idle is not None and not deadlines._idle.done()
        finally:
            ticker.cancel()

    asyncio.run(main())
