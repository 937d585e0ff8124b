"""What every insert writes (the table's indexes), and that the reads still find what they need."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import false, inspect, select, update

from receiver.ids import id_floor
from receiver.sources import dedup_key
from receiver.store import NOTES, Incoming, NoteFilter, Store
from receiver.worker.planner import unrouted
from receiver.worker.replay import replay_matching
from tests.conftest import migrated


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    migrated(store)
    try:
        yield store
    finally:
        store.close()


def incoming(body: bytes, source: str = "pucomex") -> Incoming:
    return Incoming(source, None, "203.0.113.7", {}, body, dedup_key(source, body))


def test_an_insert_writes_only_the_indexes_correctness_needs(store: Store) -> None:
    indexes = {index["name"]: index for index in inspect(store.engine).get_indexes("notifications")}
    # The primary key, one original per dedup key, what the worker has yet to route, and (for the
    # console) the notifications in a status an operator may act on.
    assert set(indexes) == {
        "uq_notifications_original",
        "ix_notifications_unrouted",
        "ix_notifications_attention",
        "ix_notifications_duplicates",
    }
    assert indexes["uq_notifications_original"]["unique"]
    assert indexes["uq_notifications_original"]["column_names"] == ["dedup_key"]
    assert indexes["ix_notifications_unrouted"]["column_names"] == ["id"]
    assert indexes["ix_notifications_attention"]["column_names"] == ["status", "id"]


def test_dedup_keys_are_stored_as_32_bytes_and_read_as_hex(store: Store) -> None:
    body = b'{"evento": "duimp.registro"}'
    key = dedup_key("pucomex", body)
    [first] = store.append_now([incoming(body)])
    [again] = store.append_now([incoming(body)])
    assert again.duplicate_of == first.id
    with store.reading() as conn:
        raw = conn.exec_driver_sql(
            "SELECT dedup_key FROM notifications WHERE id = "
            + ("?" if store.dialect == "sqlite" else "%s"),
            (first.id,),
        ).scalar_one()
    assert bytes(raw) == hashlib.sha256(b"pucomex\x00" + body).digest()
    assert store.note(first.id)["dedup_key"] == key  # type: ignore[index]
    assert [row["dedup_key"] for row in store.notes(NoteFilter())] == [key, key]
    assert store.known_keys([key, dedup_key("pucomex", b"other")]) == {key}


def test_a_dedup_key_that_is_not_a_sha256_digest_is_refused(store: Store) -> None:
    bad = Incoming("pucomex", None, "203.0.113.7", {}, b"x", "not-hex")
    # Keys come from sources.dedup_key; anything else is a bug, refused before it is stored.
    with pytest.raises(ValueError, match="hex"):
        store.append_now([bad])
    assert store.count_notes() == 0


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


def test_listing_is_in_id_order_and_since_finds_late_commits(store: Store) -> None:
    receipts = store.append_now([incoming(b"%d" % n) for n in range(5)])
    ids = [receipt.id for receipt in receipts]
    assert [row["id"] for row in store.notes(NoteFilter())] == sorted(ids)
    # A notification whose id was made before midnight but whose commit landed after it is
    # "received since" midnight: received_at decides, the id only narrows the search.
    midnight = datetime(2026, 1, 2, tzinfo=UTC)
    late = id_floor(midnight - timedelta(seconds=3))[:10] + ids[0][10:]
    with store.engine.begin() as conn:
        conn.execute(
            update(NOTES).where(NOTES.c.id == ids[0]).values(id=late, received_at=midnight)
        )
        for number, note_id in enumerate(ids[1:]):
            before = midnight - timedelta(minutes=number + 1)
            conn.execute(
                update(NOTES)
                .where(NOTES.c.id == note_id)
                .values(id=id_floor(before)[:10] + note_id[10:], received_at=before)
            )
        conn.execute(update(NOTES).values(routed=True))
    assert [row["id"] for row in store.notes(NoteFilter(since=midnight))] == [late]
    assert replay_matching(store, since=midnight) == 1
    with store.reading() as conn:
        unrouted_ids = conn.execute(select(NOTES.c.id).where(NOTES.c.routed == false())).scalars()
        assert unrouted_ids.all() == [late]


def test_a_batch_over_several_statements_keeps_every_row_and_every_duplicate(store: Store) -> None:
    # 300 notifications: more than one statement's worth on both stores (64 rows each on
    # PostgreSQL, 128 on SQLite). Keys stored before, and keys repeated within the batch, fall on
    # both sides of the statement boundaries; each must become a receipt of its original.
    stored = store.append_now([incoming(b'{"n": "old-%d"}' % n) for n in range(100)])
    old_ids = [receipt.id for receipt in stored]
    bodies: list[bytes] = []
    expected: list[str | int | None] = []  # None: original; str: a stored id; int: batch index
    first_new: dict[bytes, int] = {}
    for n in range(300):
        if n % 3 == 1:
            bodies.append(b'{"n": "old-%d"}' % (n % 100))
            expected.append(old_ids[n % 100])
        elif n % 3 == 2 and n > 150:
            body = bodies[n - 140]  # a new key first seen two statements earlier
            bodies.append(body)
            expected.append(first_new[body] if body in first_new else old_ids[(n - 140) % 100])
        else:
            body = b'{"n": "new-%d"}' % n
            first_new[body] = n
            bodies.append(body)
            expected.append(None)

    receipts = store.append_now([incoming(body) for body in bodies])

    for n, (receipt, want) in enumerate(zip(receipts, expected, strict=True)):
        if want is None:
            assert receipt.duplicate_of is None, n
        elif isinstance(want, int):
            assert receipt.duplicate_of == receipts[want].id, n
        else:
            assert receipt.duplicate_of == want, n
    assert len({receipt.id for receipt in receipts}) == 300
    assert store.count_notes() == 400
    for receipt in receipts[::37]:
        row = store.note(receipt.id)
        assert row is not None and row["duplicate_of"] == receipt.duplicate_of
