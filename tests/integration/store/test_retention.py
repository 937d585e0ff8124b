"""Retention on the real stores: what a pass deletes per status (and what it never touches), the
jobs that go with a notification, handler results by age, dedup within and after the retention
period, a dry run, and a SQLite file that stops growing under a steady load with retention on."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from sqlalchemy import Table, func, insert, select, update

from receiver.retention import RetentionSettings
from receiver.runtime.retention import purge_now
from receiver.sources import dedup_key
from receiver.store import ATTEMPTS, JOBS, NOTES, RESULTS, Incoming, Store, utcnow
from receiver.store.purge import Purger
from tests.conftest import migrated

DAY = timedelta(days=1)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    migrated(store)
    try:
        yield store
    finally:
        store.close()


def incoming(body: bytes) -> Incoming:
    return Incoming(
        "pucomex", "duimp.registro", "203.0.113.7", {}, body, dedup_key("pucomex", body)
    )


def stored(store: Store, body: bytes, status: str, age: timedelta, jobs: int = 1) -> str:
    """A notification received ``age`` ago (its id made then too: ids are time-ordered), in
    ``status``, with ``jobs`` handler jobs, each with the record of its one attempt."""
    now = utcnow()
    then = int((now - age).timestamp() * 1e9)
    with patch.object(time, "time_ns", lambda: then):
        (receipt,) = store.append_now([incoming(body)])
    with store.engine.begin() as conn:
        conn.execute(
            update(NOTES)
            .where(NOTES.c.id == receipt.id)
            .values(status=status, routed=True, received_at=now - age)
        )
        for n in range(jobs):
            job_id = conn.execute(
                insert(JOBS)
                .values(
                    notification_id=receipt.id,
                    handler=f"h{n}",
                    status="done",
                    attempts=1,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
                .returning(JOBS.c.id)
            ).scalar_one()
            conn.execute(
                insert(ATTEMPTS).values(
                    job_id=job_id,
                    notification_id=receipt.id,
                    handler=f"h{n}",
                    attempt=1,
                    started_at=now,
                    finished_at=now,
                    outcome="failed",
                    error_type="ValueError",
                    message="Portal said no",
                    traceback="Traceback (most recent call last):\n...\nValueError: Portal said no\n",
                )
            )
    return receipt.id


def count(store: Store, table: Table, **where: str) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with store.reading() as conn:
        return int(conn.execute(query).scalar_one())


RETENTION = RetentionSettings(
    done_days=10, duplicate_days=10, dead_days=100, quarantined_days=None, batch_size=3
)


def test_a_pass_deletes_by_status_and_age_with_their_jobs_and_never_what_is_unfinished(
    store: Store,
) -> None:
    old, young = 20 * DAY, 2 * DAY
    purged = [stored(store, b"done-%d" % n, "done", old, jobs=2) for n in range(7)]
    purged.append(stored(store, b"dup", "duplicate", old, jobs=0))
    purged.append(stored(store, b"dead-very-old", "dead", 200 * DAY))
    kept = [
        stored(store, b"done-young", "done", young),
        stored(store, b"dead-old", "dead", old),  # dead letters are kept 100 days
        stored(store, b"quarantined", "quarantined", 1000 * DAY),  # kept for good
        stored(store, b"pending", "pending", 1000 * DAY),  # never purged
        stored(store, b"failed", "failed", 1000 * DAY),
    ]
    report = purge_now(store, RETENTION)
    assert report.notes == {"done": 7, "duplicate": 1, "dead": 1}
    left = {row["id"] for row in store.notes_where_ids(purged + kept)}
    assert left == set(kept)
    # Their jobs and the jobs' attempts went with them (7 x 2 + 1); the kept ones keep theirs.
    assert count(store, JOBS) == len(kept)
    assert count(store, ATTEMPTS) == len(kept)
    assert {row["notification_id"] for row in store.attempts_of(kept[0])} == {kept[0]}
    assert purge_now(store, RETENTION).notes == {}  # nothing left to do


def test_a_dry_run_counts_and_deletes_nothing(store: Store) -> None:
    for n in range(5):
        stored(store, b"done-%d" % n, "done", 30 * DAY)
    stored(store, b"quarantined", "quarantined", 30 * DAY)
    before = count(store, NOTES)
    report = purge_now(store, RETENTION.model_copy(update={"quarantined_days": 1.0}), dry_run=True)
    assert report.notes == {"done": 5, "quarantined": 1}
    assert count(store, NOTES) == before


def test_a_notification_replayed_meanwhile_is_not_deleted(store: Store) -> None:
    """The pass reads without a lock, then checks again under it: a row that became pending
    between the two (a replay) stays."""
    first = stored(store, b"dead-1", "dead", 200 * DAY)
    second = stored(store, b"dead-2", "dead", 200 * DAY)
    purger = Purger(store, RETENTION.model_copy(update={"batch_size": 1}))
    assert purger.step() == 1  # both read as candidates, the first deleted
    with store.engine.begin() as conn:
        conn.execute(update(NOTES).where(NOTES.c.id == second).values(status="pending"))
    while purger.step():
        pass
    assert store.note(first) is None
    assert store.note(second) is not None and purger.report.notes == {"dead": 1}


def test_handler_results_are_purged_by_when_they_were_last_written(store: Store) -> None:
    now = utcnow()
    with store.engine.begin() as conn:
        for n in range(7):
            age = 40 * DAY if n < 5 else DAY
            conn.execute(
                insert(RESULTS).values(kind="duimp", key=f"k{n}", value="{}", updated_at=now - age)
            )
    retention = RetentionSettings(
        done_days=None, duplicate_days=None, results_days=30, batch_size=2
    )
    assert purge_now(store, retention, dry_run=True).results == 5
    assert purge_now(store, retention).results == 5
    assert count(store, RESULTS) == 2


def test_dedup_holds_within_retention_and_a_resend_after_it_is_a_new_original(
    store: Store,
) -> None:
    kept = stored(store, b"kept", "done", 5 * DAY)
    gone = stored(store, b"gone", "done", 50 * DAY)
    purge_now(store, RETENTION)
    (again_kept,) = store.append_now([incoming(b"kept")])
    assert again_kept.duplicate_of == kept  # within retention: a receipt, handlers not rerun
    (again_gone,) = store.append_now([incoming(b"gone")])
    assert again_gone.duplicate_of is None and again_gone.id != gone  # stored as new


# --- SQLite's file --------------------------------------------------------------------------


def driver_sql(store: Store, *statements: str) -> None:
    """Statements on the driver's connection in autocommit (no BEGIN IMMEDIATE around them)."""
    raw: Any = store.engine.raw_connection()
    try:
        for statement in statements:
            raw.driver_connection.execute(statement).fetchall()
    finally:
        raw.close()


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def steady_load(store: Store, path: Path, rounds: int, per_round: int = 300) -> list[int]:
    """``rounds`` of ``per_round`` ~1 KiB notifications handled (done), each round followed by a
    retention pass that keeps the last two rounds; the file's size after each."""
    sizes: list[int] = []
    round_ends: list[datetime] = []
    retention = RetentionSettings(done_days=1, duplicate_days=1, batch_size=100)
    for round_ in range(rounds):
        bodies = [
            b'{"n": %d, "pad": "%s"}' % (round_ * per_round + n, b"x" * 1000)
            for n in range(per_round)
        ]
        receipts = store.append_now([incoming(body) for body in bodies])
        ids = [receipt.id for receipt in receipts]
        with store.engine.begin() as conn:
            conn.execute(
                update(NOTES).where(NOTES.c.id.in_(ids)).values(status="done", routed=True)
            )
            round_ends.append(
                conn.execute(
                    select(func.max(NOTES.c.received_at)).where(NOTES.c.id.in_(ids))
                ).scalar_one()
            )
        if len(round_ends) > 2:
            # "Now" is one day after the end of the round before the last two.
            moment = round_ends[-3] + DAY + timedelta(microseconds=1)
            purger = Purger(store, retention, clock=functools.partial(lambda at: at, moment))
            while purger.step():
                pass
            while purger.vacuum_step():
                pass
        driver_sql(store, "PRAGMA wal_checkpoint(TRUNCATE)")
        sizes.append(file_bytes(path))
        assert count(store, NOTES) == per_round * min(round_ + 1, 2)
    return sizes


@pytest.mark.parametrize("incremental", [True, False], ids=["auto_vacuum incremental", "none"])
def test_a_sqlite_file_stops_growing_under_a_steady_load_with_retention_on(
    tmp_path: Path, incremental: bool, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "receiver.db"
    store = Store(f"sqlite:///{path}")
    migrated(store)  # a new file: the upgrade makes it auto_vacuum=INCREMENTAL
    if not incremental:  # a file made before that (the previous release's)
        driver_sql(store, "PRAGMA auto_vacuum=NONE", "VACUUM")
    raw: Any = store.engine.raw_connection()
    try:
        (mode,) = raw.driver_connection.execute("PRAGMA auto_vacuum").fetchone()
    finally:
        raw.close()
    assert mode == (2 if incremental else 0)  # 2: INCREMENTAL
    try:
        with caplog.at_level(logging.WARNING, logger="receiver.retention"):
            sizes = steady_load(store, path, rounds=12)
    finally:
        store.close()
    settled = sizes[4]
    print(f"file size per round (KiB): {[size // 1024 for size in sizes]}")
    # Three rounds of rows at most (two kept, one arriving), whatever the rounds: the file holds
    # about that and stops.
    assert max(sizes[4:]) <= settled * 1.10, sizes
    assert sizes[-1] < sizes[2] * 1.6, sizes
    told = [r for r in caplog.records if "auto_vacuum=INCREMENTAL" in r.getMessage()]
    assert len(told) == (0 if incremental else 1)  # said once, not every pass
