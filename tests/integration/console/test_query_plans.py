"""The console's reads use the indexes meant for them (SQLite's EXPLAIN QUERY PLAN): a partial
index is used only when the query repeats its predicate, which is easy to lose in a refactor."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, text

from receiver.console.inbox import InboxFilter, inbox_page, status_counts
from receiver.store import NEEDS_ATTENTION, NOTES, Store


def plan(store: Store, statement: object) -> str:
    with store.reading() as conn:
        compiled = statement.compile(  # type: ignore[attr-defined]
            dialect=conn.dialect, compile_kwargs={"literal_binds": True}
        )
        rows = conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
    return " | ".join(str(row[-1]) for row in rows)


def test_status_and_duplicate_reads_use_their_partial_indexes(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'receiver.db'}")
    store.upgrade_schema()
    try:
        by_status = (
            select(NOTES.c.id)
            .where(NOTES.c.status == "dead", text(NEEDS_ATTENTION))
            .order_by(NOTES.c.id.desc())
            .limit(51)
        )
        assert "ix_notifications_attention" in plan(store, by_status)
        repeats = select(NOTES.c.id).where(NOTES.c.duplicate_of == "01M8QQ23C4E5ZSXDP25YH8B8T9")
        assert "ix_notifications_duplicates" in plan(store, repeats)
        # And the functions that build them run on an empty store.
        assert inbox_page(store, InboxFilter(status="dead")).rows == []
        assert status_counts(store).attention == {
            "pending": 0,
            "failed": 0,
            "dead": 0,
            "quarantined": 0,
        }
    finally:
        store.close()
