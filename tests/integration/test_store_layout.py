"""What every insert writes (the table's indexes), and that the reads still find what they need."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update

from receiver.inbox import unrouted
from receiver.sources import dedup_key
from receiver.store import NOTES, Incoming, Store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_schema()
    try:
        yield store
    finally:
        store.close()


def incoming(body: bytes, source: str = "pucomex") -> Incoming:
    return Incoming(source, None, "203.0.113.7", {}, body, dedup_key(source, body))


def test_the_planner_reads_the_partial_index_of_unrouted_notifications(store: Store) -> None:
    # Mostly routed notifications, as in a store that has been working for a while.
    store.append_now([incoming(b"%d" % n) for n in range(300)])
    with store.engine.begin() as conn:
        conn.execute(update(NOTES).values(routed=True))
    store.append_now([incoming(b"new")])
    if store.dialect == "postgresql":
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE notifications")
    query = unrouted(100).compile(
        dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}
    )
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            steps = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}")]
        else:
            # PostgreSQL picks by statistics, and a scan is cheapest on a tiny table: forbid it,
            # so that the plan shows which indexes the condition allows at all.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            steps = [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {query}")]
    assert any("ix_notifications_unrouted" in step for step in steps), steps
