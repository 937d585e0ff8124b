"""What handlers keep (``ctx.save``/``ctx.load``): the ``handler_results`` table, keyed by kind
and key, a replay overwriting what it saved before.

``StoreResults`` is what the worker gives each ``Context``: saves made at the same time share one
transaction (``GroupedWrites``), and one that the store cannot hold fails alone.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from receiver import storable
from receiver.store import RESULTS, GroupedWrites, Store, utcnow

KIND_CHARS: int = RESULTS.c.kind.type.length
KEY_CHARS: int = RESULTS.c.key.type.length


@dataclass(frozen=True, slots=True)
class Result:
    """A handler result to keep: ``value`` already in its stored form (JSON text)."""

    kind: str
    key: str
    value_json: str

    @classmethod
    def of(cls, kind: str, key: str, value: Any) -> Result:
        """Checked and serialised here, in the handler's own call: a kind or key the store cannot
        hold (too long, NUL, a lone surrogate) or a value JSON cannot hold fails that call, with
        the reason, not the batch it would have been written with. Text with a lone surrogate is
        kept with JSON's escapes (the same value once loaded)."""
        storable.require(kind, KIND_CHARS, "result kind")
        storable.require(key, KEY_CHARS, "result key")
        text = json.dumps(value, ensure_ascii=False)
        if not text.isascii() and storable.problem(text) is not None:
            text = json.dumps(value)
        return cls(kind, key, text)


def save_results(store: Store, results: Sequence[Result]) -> list[None]:
    """Keep many results in one transaction; a later one for the same kind and key replaces an
    earlier one, as if they had been saved one after the other."""
    latest = {(r.kind, r.key): r for r in results}  # one row per key: PostgreSQL's upsert wants it
    now = utcnow()
    dialect = postgresql if store.dialect == "postgresql" else sqlite
    statement = dialect.insert(RESULTS)
    statement = statement.on_conflict_do_update(
        index_elements=["kind", "key"],
        set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
    )
    rows = [
        {"kind": r.kind, "key": r.key, "value": r.value_json, "updated_at": now}
        for r in latest.values()
    ]
    with store.relaxed_writes() as conn:  # at least once: see Store.relaxed_writes
        conn.execute(statement, rows)
    return [None] * len(results)


def load_result(store: Store, kind: str, key: str) -> Any | None:
    with store.reading() as conn:
        value = conn.execute(
            select(RESULTS.c.value).where(RESULTS.c.kind == kind, RESULTS.c.key == key)
        ).scalar()
    return None if value is None else json.loads(value)


class StoreResults:
    """``Context.save``/``load`` backed by the store's handler_results table."""

    def __init__(
        self,
        store: Store,
        write_many: Callable[[list[Result]], Sequence[None]] | None = None,
    ) -> None:
        """``write_many`` writes a batch of saves in one transaction (``save_results`` by
        default; a test may wrap it to count or refuse)."""
        self._store = store
        if write_many is None:
            write_many = functools.partial(save_results, store)
        self._saves = GroupedWrites[Result, None](write_many, name="result-writer")

    async def save(self, kind: str, key: str, value: Any) -> None:
        await self._saves.submit(Result.of(kind, key, value))

    async def load(self, kind: str, key: str) -> Any | None:
        return await asyncio.to_thread(load_result, self._store, kind, key)
