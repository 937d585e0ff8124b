"""The durable inbox: claiming jobs with leases, finishing them, replay, results.

Routing stored notifications into jobs is ``receiver.planner``'s (``plan`` is also here).

All functions are synchronous and run one short transaction each; the worker calls them from a
thread. The only dialect difference is the claim's ``FOR UPDATE SKIP LOCKED``, which SQLAlchemy
renders on PostgreSQL and leaves out on SQLite, where ``BEGIN IMMEDIATE`` already serialises
writers (so SQLite supports one worker process).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from receiver import storable
from receiver.planner import plan as plan
from receiver.planner import unrouted as unrouted
from receiver.store import JOBS, NOTES, RESULTS, Store, received_since
from receiver.store.tables import JobStatus, NoteStatus, utcnow

CLAIMABLE = (JobStatus.PENDING, JobStatus.FAILED)
KIND_CHARS: int = RESULTS.c.kind.type.length
KEY_CHARS: int = RESULTS.c.key.type.length


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    job_id: int
    handler: str
    attempt: int  # this attempt's number, 1-based; also the fencing token of the lease
    note_id: str
    source: str
    event: str | None
    received_at: datetime
    body: bytes
    headers: dict[str, str]
    dedup_key: str
    recovered: bool


def claim(store: Store, limit: int, lease_seconds: float) -> list[ClaimedJob]:
    """Take up to ``limit`` due jobs (or jobs whose worker's lease ran out) and lease them to us."""
    now = utcnow()
    due = or_(
        (JOBS.c.status.in_(CLAIMABLE)) & (JOBS.c.next_attempt_at <= now),
        (JOBS.c.status == JobStatus.RUNNING) & (JOBS.c.lease_until < now),
    )
    chosen = (
        select(JOBS.c.id)
        .where(due)
        .order_by(JOBS.c.next_attempt_at, JOBS.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with store.engine.begin() as conn:
        claimed = conn.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(chosen.scalar_subquery()))
            .values(
                status=JobStatus.RUNNING,
                attempts=JOBS.c.attempts + 1,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(JOBS.c.id, JOBS.c.handler, JOBS.c.attempts, JOBS.c.notification_id)
        ).all()
        if not claimed:
            return []
        notes = {
            row.id: row
            for row in conn.execute(
                select(NOTES).where(NOTES.c.id.in_({row.notification_id for row in claimed}))
            )
        }
    return [
        ClaimedJob(
            job_id=job_id,
            handler=handler,
            attempt=attempts,
            note_id=note_id,
            source=notes[note_id].source,
            event=notes[note_id].event,
            received_at=notes[note_id].received_at,
            body=notes[note_id].body,
            headers=json.loads(notes[note_id].headers),
            dedup_key=notes[note_id].dedup_key,
            recovered=notes[note_id].recovered,
        )
        for job_id, handler, attempts, note_id in claimed
    ]


def bury_abandoned(store: Store, max_attempts: int) -> int:
    """Jobs whose worker died on their last allowed attempt go to the dead letters, not round again.

    A message that kills its worker every time (a poison message) would otherwise be claimed
    forever.
    """
    now = utcnow()
    abandoned = (
        (JOBS.c.status == JobStatus.RUNNING)
        & (JOBS.c.lease_until < now)
        & (JOBS.c.attempts >= max_attempts)
    )
    with store.engine.begin() as conn:
        _lock_notes(
            conn, set(conn.execute(select(JOBS.c.notification_id).where(abandoned)).scalars())
        )
        buried = conn.execute(
            update(JOBS)
            .where(abandoned)
            .values(
                status=JobStatus.DEAD,
                lease_until=None,
                updated_at=now,
                last_error="worker lost (crash or kill) during the last allowed attempt",
            )
            .returning(JOBS.c.notification_id)
        ).scalars()
        note_ids = set(buried)
        _refresh(conn, note_ids)
    return len(note_ids)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, to be recorded."""

    job: ClaimedJob
    status: JobStatus
    error: str | None = None
    delay: float = 0.0  # seconds until the next attempt (failed jobs)


def finish_many(store: Store, outcomes: Sequence[Outcome]) -> list[bool]:
    """Record many attempts' outcomes in one transaction (one fsync for all of them).

    For each: False if its lease was lost and another worker owns the job now.
    """
    now = utcnow()
    kept: list[bool] = []
    with store.engine.begin() as conn:
        _lock_notes(conn, {outcome.job.note_id for outcome in outcomes})
        for outcome in outcomes:
            changed = conn.execute(
                update(JOBS)
                .where(_still_ours(outcome.job))
                .values(
                    status=outcome.status,
                    lease_until=None,
                    last_error=outcome.error,
                    next_attempt_at=now + timedelta(seconds=outcome.delay),
                    updated_at=now,
                )
            ).rowcount
            kept.append(bool(changed))
        _refresh(conn, {o.job.note_id for o, ok in zip(outcomes, kept, strict=True) if ok})
    return kept


def _still_ours(job: ClaimedJob) -> ColumnElement[bool]:
    """The job is still leased to us: the attempt number fences off a worker whose lease ran out."""
    return and_(
        JOBS.c.id == job.job_id,
        JOBS.c.status == JobStatus.RUNNING,
        JOBS.c.attempts == job.attempt,
    )


def release(store: Store, jobs: Iterable[ClaimedJob]) -> None:
    """Give back jobs we claimed but will not finish (graceful stop): the attempt is not counted."""
    now = utcnow()
    with store.engine.begin() as conn:
        for job in jobs:
            conn.execute(
                update(JOBS)
                .where(_still_ours(job))
                .values(
                    status=JobStatus.PENDING,
                    attempts=JOBS.c.attempts - 1,
                    lease_until=None,
                    next_attempt_at=now,
                    updated_at=now,
                )
            )


def _lock_notes(conn: Connection, note_ids: set[str]) -> None:
    """Lock the notifications whose jobs this transaction is about to settle, before touching them.

    Two jobs of one notification finishing at once on PostgreSQL would each read the other's job
    as still running (READ COMMITTED) and leave the notification 'pending' for ever. Holding the
    notification's row first makes the second wait, then read the first's committed outcome.
    Rows are taken in id order so bulk settlers cannot deadlock with each other. (SQLite's
    BEGIN IMMEDIATE already serialises writers; FOR UPDATE is not rendered there.)
    """
    if note_ids:
        conn.execute(
            select(NOTES.c.id)
            .where(NOTES.c.id.in_(sorted(note_ids)))
            .order_by(NOTES.c.id)
            .with_for_update()
        ).all()


def _refresh(conn: Connection, note_ids: set[str]) -> None:
    """A notification's status follows its jobs: dead beats failed beats pending; all done is done."""
    if not note_ids:
        return
    statuses: dict[str, set[str]] = {note_id: set() for note_id in note_ids}
    for note_id, status in conn.execute(
        select(JOBS.c.notification_id, JOBS.c.status).where(JOBS.c.notification_id.in_(note_ids))
    ):
        statuses[note_id].add(status)
    for note_id, found in statuses.items():
        if not found:
            continue
        if found == {JobStatus.DONE}:
            status = NoteStatus.DONE
        elif JobStatus.DEAD in found:
            status = NoteStatus.DEAD
        elif JobStatus.FAILED in found:
            status = NoteStatus.FAILED
        else:
            status = NoteStatus.PENDING
        conn.execute(update(NOTES).where(NOTES.c.id == note_id).values(status=status))


# --- replay -------------------------------------------------------------------------------


def replay_notes(store: Store, note_ids: Sequence[str]) -> list[str]:
    """Route these notifications again and run all their handlers anew (same idempotency keys).

    A receipt (duplicate) stands for its original. Returns the original ids replayed; unknown
    ids raise KeyError naming them.
    """
    with store.engine.begin() as conn:
        rows: dict[str, str | None] = dict(
            conn.execute(
                select(NOTES.c.id, NOTES.c.duplicate_of).where(NOTES.c.id.in_(set(note_ids)))
            ).all()
        )
        missing = [note_id for note_id in note_ids if note_id not in rows]
        if missing:
            raise KeyError(", ".join(missing))
        originals = sorted({rows[n] or n for n in note_ids})
        _unroute(conn, originals)
    return originals


def _unroute(conn: Connection, note_ids: Sequence[str]) -> None:
    for start in range(0, len(note_ids), 500):
        chunk = note_ids[start : start + 500]
        conn.execute(delete(JOBS).where(JOBS.c.notification_id.in_(chunk)))
        conn.execute(
            update(NOTES)
            .where(NOTES.c.id.in_(chunk))
            .values(routed=False, status=NoteStatus.PENDING, error=None)
        )


def replay_dead(store: Store) -> int:
    """Run dead-lettered jobs again from their first attempt; done handlers are not repeated."""
    now = utcnow()
    with store.engine.begin() as conn:
        dead = select(JOBS.c.notification_id).where(JOBS.c.status == JobStatus.DEAD)
        _lock_notes(conn, set(conn.execute(dead).scalars()))
        note_ids = set(
            conn.execute(
                update(JOBS)
                .where(JOBS.c.status == JobStatus.DEAD)
                .values(
                    status=JobStatus.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    lease_until=None,
                    updated_at=now,
                )
                .returning(JOBS.c.notification_id)
            ).scalars()
        )
        _refresh(conn, note_ids)
    return len(note_ids)


def replay_matching(
    store: Store,
    since: datetime | None = None,
    event: str | None = None,
    statuses: Sequence[str] = (),
) -> int:
    """Replay originals received since a date, optionally of one event or in given statuses."""
    query = select(NOTES.c.id).where(NOTES.c.duplicate_of.is_(None))
    if since is not None:
        query = query.where(received_since(since))
    if event is not None:
        query = query.where(NOTES.c.event == event)
    if statuses:
        query = query.where(NOTES.c.status.in_(list(statuses)))
    with store.engine.begin() as conn:
        note_ids = list(conn.execute(query).scalars())
        _unroute(conn, note_ids)
    return len(note_ids)


# --- observing and results ----------------------------------------------------------------


def job_counts(store: Store) -> tuple[dict[str, int], float]:
    """Jobs by status, and the age in seconds of the oldest job due and not yet running."""
    now = utcnow()
    with store.reading() as conn:
        counts = {
            status: int(count)
            for status, count in conn.execute(
                select(JOBS.c.status, func.count()).group_by(JOBS.c.status)
            )
        }
        oldest = conn.execute(
            select(func.min(JOBS.c.created_at)).where(JOBS.c.status.in_(CLAIMABLE))
        ).scalar()
    age = 0.0
    if oldest is not None:
        age = max(0.0, (now - oldest).total_seconds())
    return counts, age


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
    with store.engine.begin() as conn:
        conn.execute(statement, rows)
    return [None] * len(results)


def load_result(store: Store, kind: str, key: str) -> Any | None:
    with store.reading() as conn:
        value = conn.execute(
            select(RESULTS.c.value).where(RESULTS.c.kind == kind, RESULTS.c.key == key)
        ).scalar()
    return None if value is None else json.loads(value)
