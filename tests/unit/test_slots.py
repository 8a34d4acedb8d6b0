"""``Slots``: a free slot is taken at once, the others wait first come first served, and a
cancelled waiter holds none; ``take_both``/``wait_both`` hold two or neither."""

from __future__ import annotations

import asyncio

import pytest

from notifier.source.slots import Slots, take_both, wait_both


async def holder(slots: Slots, log: list[str], name: str, hold: asyncio.Event) -> None:
    if not slots.take():
        await slots.wait()
    log.append(name)
    try:
        await hold.wait()
    finally:
        slots.give()


def test_slots_are_counted() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        Slots(0)
    slots = Slots(2)
    assert slots.take()
    assert slots.take()
    assert not slots.take()
    slots.give()
    assert slots.free == 1
    assert slots.take()


async def test_waiters_go_first_come_first_served_and_nobody_jumps_the_line() -> None:
    slots, log = Slots(1), list[str]()
    gates = {n: asyncio.Event() for n in "abcd"}
    tasks = [asyncio.create_task(holder(slots, log, n, gates[n])) for n in "abcd"]
    await asyncio.sleep(0)
    assert log == ["a"]
    assert slots.waiting == 3
    gates["a"].set()
    await asyncio.sleep(0)
    assert not slots.take()  # b was handed the slot: nobody takes it past the line
    for n in "bcd":
        gates[n].set()
    await asyncio.gather(*tasks)
    assert log == ["a", "b", "c", "d"]
    assert slots.free == 1
    assert slots.waiting == 0


async def test_a_cancelled_waiter_holds_no_slot() -> None:
    slots, log = Slots(1), list[str]()
    gate = asyncio.Event()
    first = asyncio.create_task(holder(slots, log, "a", gate))
    await asyncio.sleep(0)
    second = asyncio.create_task(holder(slots, log, "b", gate))
    third = asyncio.create_task(holder(slots, log, "c", gate))
    await asyncio.sleep(0)
    second.cancel()  # waiting in line: it leaves it
    await asyncio.sleep(0)
    assert slots.waiting == 1
    gate.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    await third
    assert log == ["a", "c"]
    assert slots.free == 1


async def test_a_slot_handed_to_a_waiter_cancelled_before_it_ran_goes_on() -> None:
    slots, log = Slots(1), list[str]()
    assert slots.take()
    gate = asyncio.Event()
    gate.set()
    second = asyncio.create_task(holder(slots, log, "b", gate))
    third = asyncio.create_task(holder(slots, log, "c", gate))
    await asyncio.sleep(0)
    slots.give()  # b's future is done, b has not run yet
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    await third
    assert log == ["c"]
    assert slots.free == 1
    assert slots.waiting == 0


async def test_two_slots_are_held_both_or_neither() -> None:
    checks, pool = Slots(1), Slots(1)
    assert take_both(checks, pool)
    assert not take_both(checks, pool)
    assert (checks.free, pool.free) == (0, 0)
    checks.give()
    assert not take_both(checks, pool)  # the pool's slot is still held
    assert (checks.free, pool.free) == (1, 0)  # and the check slot was not taken
    waiter = asyncio.create_task(wait_both(checks, pool))
    await asyncio.sleep(0)
    assert (checks.free, pool.waiting) == (0, 1)  # holding the check slot, in the pool's line
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (checks.free, pool.waiting) == (1, 0)  # cancelled: it gave the check slot back
    waiter = asyncio.create_task(wait_both(checks, pool))
    await asyncio.sleep(0)
    pool.give()
    await waiter
    assert (checks.free, pool.free) == (0, 0)
