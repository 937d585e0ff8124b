"""The thread committer: a writer thread of the serving process stores everything waiting in one
transaction and one fsync (``group_commit.writer: thread``).

Concurrent requests hand their notification to the writer thread, which commits what has queued
up while the previous commit was on disk (through the same ``BatchWriter`` as the writer process),
then wakes every waiting request at once, on its own event loop. A request is answered 200 only
after the commit that holds its row has returned. ``receiver serve`` commits in a writer process
by default (``receiver.store.process``): with a thread, every driver call hands the GIL back and
forth with the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import Engine

from receiver.errors import StoreUnavailable
from receiver.ids import new_id
from receiver.store.committer import CommitHealth, Incoming, Receipt, record_commit
from receiver.store.writer import DEFAULT_TIMEOUT_SECONDS, MAX_BATCH_BYTES, BatchWriter


class _Waiting:
    """A notification in the writer thread's queue, with its request's future and event loop.

    The notification is let go as soon as the future is done: a request answered 503 (its ack
    deadline passed) while the writer is stuck releases its body at once, not when the writer
    reaches it in the queue.
    """

    __slots__ = ("future", "item", "loop")

    def __init__(
        self, item: Incoming, future: asyncio.Future[Receipt], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.item: Incoming | None = item
        self.future = future
        self.loop = loop

    def drop(self, _future: asyncio.Future[Receipt]) -> None:
        self.item = None


class ThreadCommitter(CommitHealth):
    """One writer thread; everything queued while it commits goes into its next transaction.

    A ``Committer`` (``receiver.store.committer``) for in-process use: ``:memory:`` databases,
    tests that inject faults into the engine, ``group_commit.writer: thread``.
    """

    _STOP = object()

    def __init__(
        self,
        engine: Engine,
        max_batch: int = 512,
        max_wait_ms: float = 0.0,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__()
        self._engine = engine
        self._timeout = timeout_seconds
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        """None: the writer is a thread of this process."""
        return None

    def submit(self, item: Incoming, expires_at: float = 0.0) -> asyncio.Future[Receipt]:
        """Queue ``item`` for the next commit; ``expires_at`` is unused: the writer thread sees
        directly whether the request has given up (its future is done)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        waiting = _Waiting(item, future, loop)
        future.add_done_callback(waiting.drop)
        self._queue.put(waiting)
        return future

    def close(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join(timeout=30)

    def _collect(self, first: _Waiting) -> tuple[list[tuple[_Waiting, Incoming]], bool]:
        """The next batch: ``first`` and what queued behind it, up to ``max_batch`` notifications
        and MAX_BATCH_BYTES of bodies, less the notifications nobody waits for any more."""
        batch: list[tuple[_Waiting, Incoming]] = []
        size, stopping = 0, False
        get = self._queue.get_nowait
        deadline = time.monotonic() + self._max_wait if self._max_wait else None
        waiting: Any = first
        while True:
            # A request that already gave up (ack timeout, answered 503) is not stored behind
            # its back: the sender will retry it. Racy by nature; a late give-up is a stored
            # receipt.
            item = waiting.item
            if item is not None and not waiting.future.done():
                batch.append((waiting, item))
                size += len(item.body)
            if len(batch) >= self._max_batch or size >= MAX_BATCH_BYTES:
                break
            try:
                if deadline is None:
                    waiting = get()
                else:
                    waiting = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if waiting is self._STOP:
                stopping = True
                break
        return batch, stopping

    def _run(self) -> None:
        writer = BatchWriter(self._engine, self._timeout)
        try:
            while True:
                first = self._queue.get()
                if first is self._STOP:
                    return
                batch, stopping = self._collect(first)
                if not batch:
                    if stopping:
                        return
                    continue
                result = writer.commit([(item, new_id()) for _, item in batch])
                outcome: list[Any]
                if isinstance(result, StoreUnavailable):
                    self.last_failure = time.monotonic()
                    outcome = [result] * len(batch)
                else:
                    # A notification the store refused alone says nothing about the store: only
                    # a commit that failed (above) makes it not ready.
                    if any(isinstance(receipt, Receipt) for receipt in result):
                        self.last_success = time.monotonic()
                    outcome = result
                by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = defaultdict(list)
                for (waiting, _), receipt in zip(batch, outcome, strict=True):
                    by_loop[waiting.loop].append((waiting.future, receipt))
                commit = None
                if not isinstance(result, StoreUnavailable):
                    commit = (writer.last_commit_seconds, writer.last_batch)
                for loop, pairs in by_loop.items():
                    # RuntimeError: that loop has closed, so nobody is waiting any more.
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(_settle, pairs, commit)
                    commit = None  # counted once, on one loop
                writer.finish_checkpoint()
                if stopping:
                    return
        finally:
            writer.close()


def _settle(
    pairs: list[tuple[asyncio.Future[Receipt], Any]], commit: tuple[float, int] | None
) -> None:
    if commit is not None:
        record_commit(*commit)
    for future, result in pairs:
        if future.done():  # the request gave up waiting (ack timeout) and answered 503
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
