"""One timer for many deadlines of one length: order, discards, re-arming."""

from __future__ import annotations

import asyncio

import pytest

from receiver.deadlines import Deadlines

pytestmark = pytest.mark.anyio


async def test_waiters_expire_after_the_delay_in_the_order_they_came() -> None:
    loop = asyncio.get_running_loop()
    expired: list[tuple[str, float]] = []
    deadlines = Deadlines[str](0.05, lambda name: expired.append((name, loop.time())))
    started = loop.time()
    deadlines.add("first")
    await asyncio.sleep(0.02)
    deadlines.add("second")
    await asyncio.sleep(0.1)
    assert [name for name, _ in expired] == ["first", "second"]
    assert expired[0][1] - started >= 0.05
    assert expired[1][1] - started >= 0.07  # its own deadline, not the first one's
    assert len(deadlines) == 0


async def test_a_discarded_waiter_never_expires_and_the_next_one_still_does() -> None:
    expired: list[str] = []
    deadlines = Deadlines[str](0.03, expired.append)
    done = deadlines.add("done in time")
    deadlines.add("late")
    deadlines.discard(done)
    deadlines.discard(done)  # twice is harmless
    await asyncio.sleep(0.08)
    assert expired == ["late"]


async def test_the_timer_is_set_again_for_waiters_added_after_it_fired() -> None:
    expired: list[int] = []
    deadlines = Deadlines[int](0.02, expired.append)
    deadlines.add(1)
    await asyncio.sleep(0.05)
    deadlines.add(2)
    token = deadlines.add(3)
    deadlines.discard(token)
    await asyncio.sleep(0.05)
    assert expired == [1, 2]


async def test_a_waiter_added_by_an_expiry_gets_its_own_full_delay() -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []
    deadlines: Deadlines[int] = Deadlines(0.03, lambda n: None)

    def expire(n: int) -> None:
        times.append(loop.time())
        if n == 0:
            deadlines.add(1)

    deadlines = Deadlines(0.03, expire)
    deadlines.add(0)
    await asyncio.sleep(0.1)
    assert len(times) == 2 and times[1] - times[0] >= 0.03


async def test_thousands_of_waiters_finishing_in_time_cost_no_expiry() -> None:
    expired: list[int] = []
    deadlines = Deadlines[int](0.02, expired.append)
    for n in range(5000):
        deadlines.discard(deadlines.add(n))
    survivor = deadlines.add(-1)
    await asyncio.sleep(0.05)
    assert expired == [-1]
    deadlines.discard(survivor)
    assert len(deadlines) == 0
