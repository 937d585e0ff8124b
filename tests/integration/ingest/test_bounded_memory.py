"""Memory stays bounded while the store stalls: the bytes in flight have a ceiling, the bodies of
requests answered 503 are let go at once, and the writer gives up on a lock after its timeout.

Real stores; stalls made as they happen: the writer process stopped (SIGSTOP), the table or the
SQLite write lock held by another connection.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from typing import Any

import pytest
from sqlalchemy.pool import QueuePool
from starlette.types import Message

from receiver.errors import StoreUnavailable
from receiver.ids import new_id
from receiver.ingest.allowlist import Allowlist
from receiver.ingest.app import create_app
from receiver.sources import dedup_key
from receiver.store import Incoming, Store
from receiver.store.writer import BatchWriter
from tests.conftest import ALLOWLIST, migrated
from tests.integration.ingest.test_ingest import ITEM, hold_write_lock, webhook_scope

pytestmark = pytest.mark.anyio


def big_items(count: int, size: int) -> list[Incoming]:
    """Notifications with bodies of ``size`` bytes, each its own object (for its reference count)."""
    items = []
    for n in range(count):
        body = b"%06d" % n + bytes(size - 6)
        items.append(Incoming("pucomex", None, "203.0.113.7", [], body, dedup_key("pucomex", body)))
    return items


async def give_up_all(store: Store, items: list[Incoming], deadline: float) -> set[str]:
    """Append each with ``deadline``; the names of what they raised (none may be stored)."""
    results = await asyncio.gather(
        *(store.append(item, deadline=deadline) for item in items), return_exceptions=True
    )
    return {type(result).__name__ for result in results}


def holders(items: list[Incoming]) -> list[tuple[int, int]]:
    """How many references each notification and its body have (the test's own, and others')."""
    return [(sys.getrefcount(item), sys.getrefcount(item.body)) for item in items]


async def test_a_request_answered_503_leaves_no_body_behind_a_stopped_writer(
    database_url: str,
) -> None:
    """More than the socket holds (8 MiB), so the rest waits in the serving process: what gave
    up is dropped there, and nothing else (a traceback, a frame) keeps its body."""
    store = Store(database_url, writer="process")
    migrated(store)
    try:
        store.start()
        await store.append(ITEM, deadline=10)
        pid = store.writer_pid
        assert pid is not None
        items = big_items(40, 512 * 1024)  # 20 MiB
        before = holders(items)
        os.kill(pid, signal.SIGSTOP)
        try:
            assert await give_up_all(store, items, 0.3) == {"StoreUnavailable"}
            await asyncio.sleep(0.05)  # the sender's next try at the full socket drops them
            assert holders(items) == before
        finally:
            os.kill(pid, signal.SIGCONT)
        receipt = await store.append(big_items(1, 1024)[0], deadline=10)  # working again
        assert store.note(receipt.id) is not None
    finally:
        store.close()


async def test_a_request_answered_503_leaves_no_body_in_the_writer_threads_queue(
    database_url: str,
) -> None:
    store = Store(database_url, writer="thread", commit_timeout_seconds=30)
    migrated(store)
    holder = hold_write_lock(store, 3.0)
    try:
        store.start()
        stuck = asyncio.ensure_future(store.append(ITEM, deadline=0.3))  # the writer waits
        await asyncio.sleep(0.1)
        items = big_items(10, 256 * 1024)
        before = holders(items)
        assert await give_up_all(store, items, 0.3) == {"StoreUnavailable"}
        await asyncio.sleep(0)  # the done callbacks run
        assert holders(items) == before  # queued behind the stuck batch, and let go
        with pytest.raises(StoreUnavailable):
            await stuck
    finally:
        await asyncio.to_thread(holder.join)
        store.close()


def test_the_writer_gives_up_on_a_lock_after_its_timeout(store: Store) -> None:
    """A table locked elsewhere (PostgreSQL: lock_timeout) or SQLite's write lock held: the batch
    fails while the lock is still held, and the same writer commits once it is free."""
    writer = BatchWriter(store.engine, timeout_seconds=0.2)
    release = threading.Event()
    try:
        holder = hold_write_lock(store, 20.0, release)
        outcome = writer.commit([(ITEM, new_id())])
        assert holder.is_alive()  # given up before the lock was let go
        assert isinstance(outcome, StoreUnavailable)
        assert store.count_notes() == 0
    finally:
        release.set()
        holder.join()
    try:
        assert not isinstance(writer.commit([(ITEM, new_id())]), StoreUnavailable)
    finally:
        writer.close()


@pytest.mark.postgres
def test_the_writers_timeouts_stay_with_the_writer(tmp_path: Any) -> None:
    """The connection goes back to a shared pool with PostgreSQL's defaults, not the writer's."""
    from tests.conftest import fresh_database

    store = Store(fresh_database("postgres", tmp_path))
    migrated(store)
    try:
        writer = BatchWriter(store.engine, timeout_seconds=0.2)
        assert not isinstance(writer.commit([(ITEM, new_id())]), StoreUnavailable)
        used = writer.connection
        assert used is not None
        assert used.exec_driver_sql("SHOW lock_timeout").scalar() == "200ms"
        writer.close()
        pool = store.engine.pool
        assert isinstance(pool, QueuePool)
        pooled = [store.engine.connect() for _ in range(pool.checkedin())]
        try:
            for conn in pooled:
                assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
                assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "0"
        finally:
            for conn in pooled:
                conn.close()
    finally:
        store.close()


class Request:
    """One POST driven by hand through the ASGI app: what it sent back, how often it read."""

    def __init__(self, app: Any, length: int, chunked: bool = False) -> None:
        self.sent: list[Message] = []
        self.reads = 0
        self.length = length
        extra = () if chunked else ((b"content-length", b"%d" % length),)
        self.task = asyncio.ensure_future(app(webhook_scope(*extra), self.receive, self.send))

    async def receive(self) -> dict[str, Any]:
        self.reads += 1
        unique = b"%08d" % (id(self) % 10**8)
        return {"type": "http.request", "body": unique + bytes(self.length - len(unique))}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        return self.sent[0]["status"] if self.sent else None


async def test_past_max_inflight_bytes_a_request_is_answered_503_unread(
    make_settings: Any, store: Store
) -> None:
    """Two bodies of 4 KiB wait for a stalled store; the bound is 8 KiB: the next requests are
    answered 503 with Retry-After at once, without a byte of their bodies read, and once the
    first two are answered the bytes they held are free again."""
    settings = make_settings(max_body_bytes=4096, max_inflight_bytes=8192, ack_timeout_seconds=10)
    app = create_app(settings, store=store, allowlist=Allowlist.from_mapping(ALLOWLIST))
    store.start()
    release = threading.Event()
    holder = hold_write_lock(store, 20.0, release)
    try:
        waiting = [Request(app, 4096), Request(app, 4096)]
        await asyncio.sleep(0.2)  # both read and waiting for the stalled store
        refused = [Request(app, 4096), Request(app, 100, chunked=True), Request(app, 10)]
        await asyncio.gather(*(request.task for request in refused))
        for request in refused:
            assert request.status == 503
            headers = dict(request.sent[0]["headers"])
            assert headers[b"retry-after"] == b"5"
            assert request.reads == 0  # not a byte of the body read
        assert [request.status for request in waiting] == [None, None]  # still waiting
    finally:
        release.set()
        await asyncio.to_thread(holder.join)
    await asyncio.gather(*(request.task for request in waiting))
    assert [request.status for request in waiting] == [200, 200]
    again = Request(app, 4096)
    await again.task
    assert again.status == 200  # what the answered requests held is free again
    assert store.count_notes() == 3
