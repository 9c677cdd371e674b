"""Priority slots: highest priority first, then first come; cancellation is clean."""

from __future__ import annotations

import asyncio

from accel.manager.queue import PrioritySlots


async def _until_waiting(slots: PrioritySlots, n: int) -> None:
    """Let the loop run until ``n`` tasks wait on ``slots`` (bounded: 1,000 turns)."""
    for _ in range(1000):
        if len(slots.waiting()) == n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{n} waiters expected, {slots.waiting()} after 1,000 loop turns")


async def test_order_priority_then_arrival_and_reprioritize() -> None:
    slots = PrioritySlots(1)
    await slots.acquire("first", 0)
    order: list[str] = []

    async def want(key: str, prio: int) -> None:
        await slots.acquire(key, prio)
        order.append(key)
        await asyncio.sleep(0)
        slots.release()

    tasks = [asyncio.create_task(want(k, p)) for k, p in [("a", 0), ("b", 3), ("c", 3), ("d", 1)]]
    await _until_waiting(slots, 4)
    assert slots.waiting() == ["b", "c", "d", "a"]
    assert slots.set_priority("a", 9) and not slots.set_priority("zzz", 1)
    slots.release()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c", "d"]
    assert slots.free == 1


async def test_cancelled_waiter_leaves_no_hole() -> None:
    slots = PrioritySlots(1)
    await slots.acquire("x", 0)
    t = asyncio.create_task(slots.acquire("y", 0))
    await _until_waiting(slots, 1)
    t.cancel()
    await asyncio.gather(t, return_exceptions=True)
    assert slots.waiting() == []
    slots.release()
    assert slots.free == 1
