"""The group commit in a writer process of its own: receipts, faults, and the writer's death.

Real writer processes on a real SQLite file and the real PostgreSQL server; faults are made the
way they happen: the process is stopped (SIGSTOP, a stalled machine) or killed (SIGKILL, the OOM
killer), and the table is taken away under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from receiver.errors import StoreUnavailable
from receiver.sources import dedup_key
from receiver.store import NOTES, Incoming, Store
from tests.conftest import migrated

pytestmark = pytest.mark.anyio

HEADERS = [(b"content-type", b"application/json"), (b"x-request-id", b"r-1")]


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url, writer="process")
    migrated(store)
    try:
        yield store
    finally:
        store.close()


def note(n: int, source: str = "pucomex") -> Incoming:
    body = json.dumps({"evento": "duimp.registrada", "dados": {"numero": n}}).encode()
    return Incoming(source, "duimp.registrada", "203.0.113.7", HEADERS, body)


async def started(store: Store, seconds: float = 20.0) -> int:
    """Start the store's writer (if needed), wait until it is up, and give its process id."""
    store.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        pid = store.writer_pid
        if pid is not None and await asyncio.to_thread(store.ready):
            return pid
        await asyncio.sleep(0.02)
    raise AssertionError("the writer process did not start")


def stored(url: str) -> int:
    other = Store(url)
    try:
        return other.count_notes()
    finally:
        other.close()


async def test_the_writer_process_stores_and_answers_receipts(store: Store) -> None:
    pid = await started(store)
    assert pid != os.getpid()
    first = await store.append(note(1), deadline=5)
    again = await store.append(note(1), deadline=5)
    other = await store.append(note(2), deadline=5)
    assert first.duplicate_of is None and other.duplicate_of is None
    assert again.duplicate_of == first.id
    row = store.note(first.id)
    assert row is not None
    assert row["body"] == note(1).body
    assert row["dedup_key"] == dedup_key("pucomex", note(1).body)  # made by the writer
    assert json.loads(row["headers"]) == {"content-type": "application/json", "x-request-id": "r-1"}
    assert row["event"] == "duimp.registrada" and row["client_ip"] == "203.0.113.7"


async def test_a_burst_is_committed_in_batches_with_one_receipt_each(store: Store) -> None:
    await started(store)
    receipts = await asyncio.gather(*(store.append(note(n), deadline=10) for n in range(600)))
    assert len({r.id for r in receipts}) == 600
    assert all(r.duplicate_of is None for r in receipts)
    assert store.count_notes() == 600


async def test_a_killed_writer_fails_its_waiters_and_another_takes_over(store: Store) -> None:
    pid = await started(store)
    os.kill(pid, signal.SIGSTOP)  # it will never read these
    waiting = [asyncio.ensure_future(store.append(note(n))) for n in range(5)]
    await asyncio.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 10)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert not await asyncio.to_thread(store.ready)  # until the new writer is up
    new_pid = await started(store)
    assert new_pid != pid
    receipt = await store.append(note(99), deadline=5)
    assert store.note(receipt.id) is not None
    assert store.count_notes() == 1  # none of the five was stored behind their senders' backs


async def test_a_request_that_gave_up_is_not_stored_afterwards(store: Store) -> None:
    pid = await started(store)
    os.kill(pid, signal.SIGSTOP)  # a stalled writer: the ack deadline answers for it
    try:
        loop = asyncio.get_running_loop()
        begun = loop.time()
        with pytest.raises(StoreUnavailable, match="did not commit within"):
            await store.append(note(1), deadline=0.2)
        assert loop.time() - begun < 1.0
        assert not await asyncio.to_thread(store.ready)  # a stalled commit is a failure too
    finally:
        os.kill(pid, signal.SIGCONT)
    receipt = await store.append(note(2), deadline=5)
    assert store.count_notes() == 1
    assert store.note(receipt.id) is not None
    assert await asyncio.to_thread(store.ready)


async def test_a_backlog_larger_than_the_socket_waits_whole_and_drains(store: Store) -> None:
    # A stalled writer: what is handed over fills the socket (4 MiB asked, 8 MiB as Linux doubles
    # it), and the rest waits in the serving process, frame by frame, sent in order once the
    # writer reads again.
    pid = await started(store)
    padding = "x" * 4096
    os.kill(pid, signal.SIGSTOP)
    try:
        waiting = [
            asyncio.ensure_future(
                store.append(
                    Incoming(
                        "pucomex",
                        None,
                        "203.0.113.7",
                        HEADERS,
                        b'{"n":%d,"p":"%s"}' % (n, padding.encode()),
                    ),
                    deadline=60,
                )
            )
            for n in range(6000)  # 24 MiB: three times what the socket holds
        ]
        await asyncio.sleep(0.5)
        assert not any(future.done() for future in waiting)  # nothing acknowledged while stopped
    finally:
        os.kill(pid, signal.SIGCONT)
    receipts = await asyncio.wait_for(asyncio.gather(*waiting), 60)
    assert len({receipt.id for receipt in receipts}) == 6000
    assert all(not receipt.duplicate for receipt in receipts)
    assert store.count_notes() == 6000


async def test_a_failing_commit_answers_unavailable_and_the_writer_recovers(
    store: Store, database_url: str
) -> None:
    await started(store)
    await store.append(note(1), deadline=5)
    with store.engine.begin() as conn:
        conn.execute(
            text(
                f"DROP TABLE {NOTES.name} CASCADE"
                if store.dialect == "postgresql"
                else f"DROP TABLE {NOTES.name}"
            )
        )
    with pytest.raises(StoreUnavailable, match="store commit failed"):
        await store.append(note(2), deadline=5)
    assert not await asyncio.to_thread(store.ready)
    NOTES.create(store.engine)  # the table is back (its version row never went)
    receipt = await store.append(note(3), deadline=5)
    assert receipt.duplicate_of is None
    assert await asyncio.to_thread(store.ready)
    assert stored(database_url) == 1


async def test_closing_commits_what_was_handed_over_and_stops_the_writer(
    store: Store, database_url: str
) -> None:
    pid = await started(store)
    waiting = [asyncio.ensure_future(store.append(note(n), deadline=10)) for n in range(50)]
    await asyncio.sleep(0)  # every request has handed its notification over
    await asyncio.to_thread(store.close)
    receipts = await asyncio.gather(*waiting)
    assert len({r.id for r in receipts}) == 50
    assert stored(database_url) == 50
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped


async def test_until_started_waits_for_the_writers_hello_and_gives_up_in_time(
    store: Store,
) -> None:
    """serve waits for this before it listens: once it returns True the writer has said hello
    (the store is ready) and the first notification does not pay for the writer's start."""
    assert await store.until_started(within=20.0)
    assert await asyncio.to_thread(store.ready)
    receipt = await asyncio.wait_for(store.append(note(1)), 5)
    assert receipt.id
    os.kill(store.writer_pid or 0, signal.SIGSTOP)  # a writer that cannot answer
    pid = store.writer_pid
    try:
        os.kill(pid or 0, signal.SIGKILL)  # gone: another starts after a pause
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert not await store.until_started(within=0.05)  # not up yet: False, in time
        assert loop.time() - began < 2.0
        assert await store.until_started(within=20.0)
        assert store.writer_pid not in (None, pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid or 0, signal.SIGCONT)
