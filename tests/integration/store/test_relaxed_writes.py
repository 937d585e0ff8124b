"""The handler worker's relaxed write transactions, on a real SQLite file and the real PostgreSQL
server: relaxed inside, durable again for the next transaction on the same pooled connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection

from receiver.store import Store


@pytest.fixture
def one_connection_store(database_url: str) -> Iterator[Store]:
    """One pooled connection, so every transaction below reuses the relaxed one's."""
    store = Store(database_url, pool_size=1)
    store.upgrade_schema()
    try:
        yield store
    finally:
        store.close()


def durability(conn: Connection, dialect: str) -> str:
    if dialect == "sqlite":
        level = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        return {1: "relaxed", 2: "durable"}[int(level or 0)]
    value = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
    return "relaxed" if value == "off" else "durable"


def test_relaxed_inside_durable_again_after(one_connection_store: Store) -> None:
    store = one_connection_store
    with store.engine.begin() as conn:
        assert durability(conn, store.dialect) == "durable"
    with store.relaxed_writes() as conn:
        assert durability(conn, store.dialect) == "relaxed"
    with store.engine.begin() as conn:  # the same pooled connection, a durable transaction
        assert durability(conn, store.dialect) == "durable"
    with store.relaxed_writes() as conn:
        assert durability(conn, store.dialect) == "relaxed"
    store.check_durability()  # what serve checks at start-up still holds


def test_a_relaxed_transaction_that_fails_commits_nothing(one_connection_store: Store) -> None:
    store = one_connection_store
    with pytest.raises(RuntimeError), store.relaxed_writes() as conn:
        conn.exec_driver_sql("CREATE TABLE relaxed_probe (x INTEGER)")
        raise RuntimeError("rolled back")
    with store.engine.begin() as conn:
        assert durability(conn, store.dialect) == "durable"
        found = conn.exec_driver_sql(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'relaxed_probe'"
            if store.dialect == "postgresql"
            else "SELECT count(*) FROM sqlite_master WHERE name = 'relaxed_probe'"
        ).scalar()
    assert found == 0
