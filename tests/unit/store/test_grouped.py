"""GroupedWrites on its own: what queued together is written together, bounded, and one bad item
or one caller gone does not decide for the others."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy.exc import OperationalError

from receiver.store.grouped import GroupedWrites

pytestmark = pytest.mark.anyio


class Recorder:
    """A ``write_many`` that keeps each call's items; ``refuse`` fails any call holding it."""

    def __init__(self, refuse: int | None = None, error: Exception | None = None) -> None:
        self.calls: list[list[int]] = []
        self.refuse = refuse
        self.error = error or ValueError(f"item {refuse} refused")
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # a write has begun (and waits at the gate if closed)

    def __call__(self, items: list[int]) -> list[str]:
        self.entered.set()
        self.gate.wait(5)
        self.calls.append(items)
        if self.refuse in items:
            raise self.error
        return [f"stored {item}" for item in items]


async def began(recorder: Recorder) -> None:
    """Once a write is under way in its thread (set there, so waited for in another thread)."""
    assert await asyncio.to_thread(recorder.entered.wait, 5)


async def test_what_queues_together_is_written_in_one_call_in_order() -> None:
    recorder = Recorder()
    writes = GroupedWrites(recorder, name="test")
    results = await asyncio.gather(*(writes.submit(n) for n in range(10)))
    assert results == [f"stored {n}" for n in range(10)]
    assert recorder.calls == [list(range(10))]


async def test_items_queued_during_a_write_go_in_the_next_one_each_call_bounded() -> None:
    recorder = Recorder()
    recorder.gate.clear()  # the first write waits, as a slow commit does
    writes = GroupedWrites(recorder, name="test", max_batch=4)
    first = asyncio.create_task(writes.submit(0))
    await began(recorder)  # its write has started and is held
    later = [asyncio.create_task(writes.submit(n)) for n in range(1, 10)]
    await asyncio.sleep(0)  # they queue
    recorder.gate.set()
    assert await first == "stored 0"
    assert await asyncio.gather(*later) == [f"stored {n}" for n in range(1, 10)]
    assert recorder.calls == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_an_item_refused_in_a_batch_fails_only_its_own_caller() -> None:
    recorder = Recorder(refuse=2)
    writes = GroupedWrites(recorder, name="test")
    results = await asyncio.gather(*(writes.submit(n) for n in range(4)), return_exceptions=True)
    assert results[:2] == ["stored 0", "stored 1"] and results[3] == "stored 3"
    assert isinstance(results[2], ValueError)
    assert recorder.calls == [[0, 1, 2, 3], [0], [1], [2], [3]]  # the batch, then one by one


async def test_a_store_that_is_down_fails_the_batch_in_one_call() -> None:
    down = OperationalError("COMMIT", {}, ConnectionRefusedError("connection refused"))
    recorder = Recorder(refuse=0, error=down)
    writes = GroupedWrites(recorder, name="test")
    results = await asyncio.gather(*(writes.submit(n) for n in range(4)), return_exceptions=True)
    assert all(result is down for result in results)
    assert recorder.calls == [[0, 1, 2, 3]]


async def test_a_caller_that_gave_up_leaves_the_others_their_results() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    writes = GroupedWrites(recorder, name="test")
    impatient = asyncio.create_task(writes.submit(0))
    patient = asyncio.create_task(writes.submit(1))
    await began(recorder)
    impatient.cancel()
    recorder.gate.set()
    assert await patient == "stored 1"
    with pytest.raises(asyncio.CancelledError):
        await impatient
    await writes.flush()
    assert recorder.calls == [[0, 1]]  # written all the same: the caller only stopped waiting
