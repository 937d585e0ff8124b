"""Group commit for callers on one event loop: what queued while a batch was written goes next."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from receiver.store.faults import store_down

T = TypeVar("T")
R = TypeVar("R")


class GroupedWrites(Generic[T, R]):
    """Writes items in batches: one transaction (one fsync) for every item that arrived while the
    previous batch was being written, as ingest's group commit does.

    Concurrent callers (handlers saving results, workers recording outcomes, emits) otherwise
    each took SQLite's write lock in turn, with a commit apiece, and waited for it in SQLite's
    busy handler (sleeps of 1, 2, 5 ... 100 ms).

    ``write_many`` runs in a thread and returns one result per item, in order.
    """

    def __init__(
        self, write_many: Callable[[list[T]], Sequence[R]], name: str, max_batch: int = 500
    ) -> None:
        self._write_many = write_many
        self._name = name
        self._max_batch = max_batch  # a transaction's size stays bounded, whatever queues
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """``item``'s result once it is committed; raises what its own write raised."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write(), name=self._name)
        return await future

    async def flush(self) -> None:
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)

    async def _write(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            try:
                results = await asyncio.to_thread(self._write_many, [item for item, _ in batch])
            except Exception as error:
                if len(batch) == 1 or store_down(error):
                    # Its own error, or the store's (nothing is gained by writing the items one
                    # by one then): every caller gets it now and tries later.
                    for _, future in batch:
                        _fail(future, error)
                    continue
                # One bad item (say, a key too long for PostgreSQL) must not fail the others:
                # each is written again on its own, and only its own error reaches its caller.
                for item, future in batch:
                    try:
                        (alone,) = await asyncio.to_thread(self._write_many, [item])
                    except Exception as own:
                        _fail(future, own)
                    else:
                        _resolve(future, alone)
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    _resolve(future, result)


def _resolve(future: asyncio.Future[R], result: R) -> None:
    if not future.done():  # done: its caller was cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
