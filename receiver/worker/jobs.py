"""The job queue: claiming jobs with leases, finishing them, giving them back, counting them.

``JobQueue`` is what the worker asks of it, as procrastinate's connector is what its worker
asks: ``StoreJobQueue`` is the queue over the store (the ``jobs`` table beside the notifications),
and ``receiver.worker.memory.MemoryJobQueue`` its in-memory twin for the worker's unit tests.
Routing stored notifications into jobs is ``receiver.worker.planner``'s (``plan`` here hands over
to it); replaying is ``receiver.worker.replay``'s; handler results ``receiver.worker.results``'s.

``StoreJobQueue``'s methods are synchronous and run one short transaction each; the worker calls
them from a thread. The only dialect difference is the claim's ``FOR UPDATE SKIP LOCKED``, which
SQLAlchemy renders on PostgreSQL and leaves out on SQLite, where ``BEGIN IMMEDIATE`` already
serialises writers (so SQLite supports one worker process).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Exists, and_, case, exists, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from receiver import metrics
from receiver.store import ATTEMPTS, JOBS, NOTES, JobStatus, NoteStatus, Store, utcnow
from receiver.store.rowsinsert import RowsInsert
from receiver.worker import planner
from receiver.worker.failures import Attempt
from receiver.worker.routing import Notification, Routing

CLAIMABLE = (JobStatus.PENDING, JobStatus.FAILED)
ABANDONED = "worker lost (crash or kill) during the last allowed attempt"


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
    # The notification as its handler gets it, when the planner that leased the job had read it
    # already (``planner.plan_leasing``); otherwise the worker reads it from the fields above.
    notification: Notification | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, to be recorded."""

    job: ClaimedJob
    status: JobStatus
    error: str | None = None
    delay: float = 0.0  # seconds until the next attempt (failed jobs)
    attempt: Attempt | None = None  # the record of the attempt, kept beside the outcome


# What attempt_row holds, as finish_many inserts it.
ATTEMPT_ROWS = RowsInsert(
    ATTEMPTS,
    (
        "job_id",
        "notification_id",
        "handler",
        "attempt",
        "started_at",
        "finished_at",
        "outcome",
        "error_type",
        "message",
        "traceback",
    ),
)


def attempt_row(outcome: Outcome) -> dict[str, object] | None:
    """The ``job_attempts`` row of an outcome that carries its attempt's record."""
    record = outcome.attempt
    if record is None:
        return None
    return {
        "job_id": outcome.job.job_id,
        "notification_id": outcome.job.note_id,
        "handler": outcome.job.handler,
        "attempt": outcome.job.attempt,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "outcome": record.outcome.value,
        "error_type": record.error_type,
        "message": record.message,
        "traceback": record.traceback,
    }


class JobQueue(Protocol):
    """What the worker asks of the inbox. Synchronous: the worker calls it from a thread."""

    def plan(self, routing: Routing, limit: int) -> int:
        """Give up to ``limit`` new notifications their jobs, or quarantine them; how many."""
        ...

    def plan_leasing(
        self, routing: Routing, limit: int, lease: int, lease_seconds: float
    ) -> tuple[int, list[ClaimedJob]]:
        """``plan``, leasing to the caller the first ``lease`` of the jobs it makes (their first
        attempt, as ``claim`` would): how many notifications were planned, and those jobs."""
        ...

    def claim(self, limit: int, lease_seconds: float) -> list[ClaimedJob]:
        """Take up to ``limit`` due jobs (or jobs whose lease ran out), leased to the caller."""
        ...

    def bury_abandoned(self, max_attempts: int) -> int:
        """Send to the dead letters the jobs whose worker died on their last allowed attempt."""
        ...

    def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record outcomes; for each, False if its lease was lost to another worker."""
        ...

    def release(self, jobs: Iterable[ClaimedJob]) -> None:
        """Give back claimed jobs that will not be finished; their attempt is not counted."""
        ...

    def counts(self) -> tuple[dict[str, int], float]:
        """Jobs by status, and the age in seconds of the oldest job due and not yet running."""
        ...


def note_status(job_statuses: set[str]) -> NoteStatus:
    """A notification's status follows its jobs': dead beats failed beats pending; all done is
    done."""
    if job_statuses == {JobStatus.DONE}:
        return NoteStatus.DONE
    if JobStatus.DEAD in job_statuses:
        return NoteStatus.DEAD
    if JobStatus.FAILED in job_statuses:
        return NoteStatus.FAILED
    return NoteStatus.PENDING


class StoreJobQueue:
    """The job queue over the store's ``jobs`` and ``notifications`` tables."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def plan(self, routing: Routing, limit: int) -> int:
        return planner.plan(self._store, routing, limit)

    def plan_leasing(
        self, routing: Routing, limit: int, lease: int, lease_seconds: float
    ) -> tuple[int, list[ClaimedJob]]:
        planned, leased = planner.plan_leasing(
            self._store, routing, limit, lease=lease, lease_seconds=lease_seconds
        )
        return planned, [leased_job(job) for job in leased]

    def claim(self, limit: int, lease_seconds: float) -> list[ClaimedJob]:
        """Take up to ``limit`` due jobs (or jobs whose worker's lease ran out), leased to us."""
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
        with self._store.relaxed_writes() as conn:
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

    def bury_abandoned(self, max_attempts: int) -> int:
        """Jobs whose worker died on their last allowed attempt go to the dead letters, not round
        again: a message that kills its worker every time (a poison message) would otherwise be
        claimed forever."""
        now = utcnow()
        abandoned = (
            (JOBS.c.status == JobStatus.RUNNING)
            & (JOBS.c.lease_until < now)
            & (JOBS.c.attempts >= max_attempts)
        )
        # Looked for first without a write transaction: the worker asks before every claim, and
        # on SQLite each write transaction takes the write lock that ingest's commits wait for.
        with self._store.reading() as conn:
            if conn.execute(select(JOBS.c.id).where(abandoned).limit(1)).first() is None:
                return 0
        with self._store.relaxed_writes() as conn:
            lock_notes(
                conn, set(conn.execute(select(JOBS.c.notification_id).where(abandoned)).scalars())
            )
            buried = conn.execute(
                update(JOBS)
                .where(abandoned)
                .values(
                    status=JobStatus.DEAD,
                    lease_until=None,
                    updated_at=now,
                    last_error=ABANDONED,
                )
                .returning(JOBS.c.notification_id, JOBS.c.handler)
            ).all()
            note_ids = {note_id for note_id, _ in buried}
            refresh_statuses(conn, note_ids)
        for _, handler in buried:
            metrics.DEAD_LETTERS.labels(handler).inc()
        return len(note_ids)

    def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record many attempts' outcomes in one transaction (one fsync for all of them), each
        with its attempt's row in ``job_attempts`` (one multi-row insert for all of them).

        For each: False if its lease was lost and another worker owns the job now; the attempt
        of a lost lease is not recorded (the job's record is the new owner's now). The leases
        are read in one statement and the outcomes written in one per distinct outcome (a burst's
        jobs are mostly 'done' alike): a statement per job held SQLite's write lock, which
        ingest's commits wait for, through a statement and a GIL hand-over per job, and capped
        the worker near 700 jobs/s with a no-op handler (loadtests/worker_bench.py).
        """
        now = utcnow()
        with self._store.relaxed_writes() as conn:
            lock_notes(conn, {outcome.job.note_id for outcome in outcomes})
            attempts = leased_attempts(conn, [outcome.job.job_id for outcome in outcomes])
            kept: list[bool] = []
            same: dict[tuple[JobStatus, str | None, float], list[int]] = {}
            for outcome in outcomes:
                job = outcome.job
                ours = attempts.pop(job.job_id, None) == job.attempt  # popped: recorded once
                kept.append(ours)
                if ours:
                    key = (outcome.status, outcome.error, outcome.delay)
                    same.setdefault(key, []).append(job.job_id)
            for (status, error, delay), job_ids in same.items():
                conn.execute(
                    update(JOBS)
                    .where(JOBS.c.id.in_(job_ids))
                    .values(
                        status=status,
                        lease_until=None,
                        last_error=error,
                        next_attempt_at=now + timedelta(seconds=delay),
                        updated_at=now,
                    )
                )
            recorded = [
                row
                for outcome, ok in zip(outcomes, kept, strict=True)
                if ok and (row := attempt_row(outcome)) is not None
            ]
            ATTEMPT_ROWS.run(conn, [ATTEMPT_ROWS.row(conn.dialect, row) for row in recorded])
            refresh_statuses(
                conn, {o.job.note_id for o, ok in zip(outcomes, kept, strict=True) if ok}
            )
        return kept

    def release(self, jobs: Iterable[ClaimedJob]) -> None:
        """Give back jobs we claimed but will not finish (graceful stop): the attempt is not
        counted."""
        now = utcnow()
        with self._store.engine.begin() as conn:
            for job in jobs:
                conn.execute(
                    update(JOBS)
                    .where(still_ours(job))
                    .values(
                        status=JobStatus.PENDING,
                        attempts=JOBS.c.attempts - 1,
                        lease_until=None,
                        next_attempt_at=now,
                        updated_at=now,
                    )
                )

    def counts(self) -> tuple[dict[str, int], float]:
        """Jobs by status, and the age in seconds of the oldest job due and not yet running."""
        now = utcnow()
        with self._store.reading() as conn:
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


def leased_job(leased: planner.Leased) -> ClaimedJob:
    """The claimed job of a job the planner leased as it made it: its first attempt."""
    row = leased.row
    headers = json.loads(row.headers)
    notification = None
    if leased.read is not None:
        notification = Notification(
            id=row.id,
            source=row.source,
            event=leased.event,
            received_at=row.received_at,
            payload=leased.read.payload,
            body=row.body,
            headers=headers,
            idempotency_key=row.dedup_key,
            recovered=row.recovered,
            parsed=leased.read.typed,
        )
    return ClaimedJob(
        job_id=leased.job_id,
        handler=leased.handler,
        attempt=1,
        note_id=row.id,
        source=row.source,
        event=leased.event,
        received_at=row.received_at,
        body=row.body,
        headers=headers,
        dedup_key=row.dedup_key,
        recovered=row.recovered,
        notification=notification,
    )


def still_ours(job: ClaimedJob) -> ColumnElement[bool]:
    """The job is still leased to us: the attempt number fences off a worker whose lease ran out."""
    return and_(
        JOBS.c.id == job.job_id,
        JOBS.c.status == JobStatus.RUNNING,
        JOBS.c.attempts == job.attempt,
    )


def lock_notes(conn: Connection, note_ids: set[str]) -> None:
    """Lock the notifications whose jobs this transaction is about to settle, before touching them.

    Two jobs of one notification finishing at once on PostgreSQL would each read the other's job
    as still running (READ COMMITTED) and leave the notification 'pending' for ever. Holding the
    notification's row first makes the second wait, then read the first's committed outcome.
    Rows are taken in id order so bulk settlers cannot deadlock with each other. (SQLite's
    BEGIN IMMEDIATE already serialises writers; FOR UPDATE is not rendered there.)
    """
    if note_ids and conn.dialect.name != "sqlite":  # nothing to lock there: a read for nothing
        conn.execute(
            select(NOTES.c.id)
            .where(NOTES.c.id.in_(sorted(note_ids)))
            .order_by(NOTES.c.id)
            .with_for_update()
        ).all()


def leased_attempts(conn: Connection, job_ids: Sequence[int]) -> dict[int, int]:
    """The running jobs among ``job_ids`` and their attempt numbers (the lease's fencing token),
    locked until the transaction ends (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers)."""
    if not job_ids:
        return {}
    rows = conn.execute(
        select(JOBS.c.id, JOBS.c.attempts)
        .where(JOBS.c.id.in_(sorted(set(job_ids))), JOBS.c.status == JobStatus.RUNNING)
        .order_by(JOBS.c.id)
        .with_for_update()
    )
    return {job_id: attempts for job_id, attempts in rows}


def refresh_statuses(conn: Connection, note_ids: set[str]) -> None:
    """Set each notification's status from its jobs' (``note_status``), in one statement that
    the database works out for every notification itself.

    Reading the jobs' statuses back and writing one UPDATE per status from Python was 10% of the
    worker's CPU with a no-op handler (py-spy over loadtests/worker_bench.py). A notification
    without jobs is left as it is.
    """
    if not note_ids:
        return
    conn.execute(
        update(NOTES).where(NOTES.c.id.in_(note_ids), _has_jobs()).values(status=STATUS_FROM_JOBS)
    )


def _has_jobs(*condition: ColumnElement[bool]) -> Exists:
    """The notification being updated has a job (that meets ``condition``)."""
    return exists().where(JOBS.c.notification_id == NOTES.c.id, *condition)


# note_status in SQL: dead beats failed beats pending; all done is done.
STATUS_FROM_JOBS = case(
    (~_has_jobs(JOBS.c.status != JobStatus.DONE.value), NoteStatus.DONE.value),
    (_has_jobs(JOBS.c.status == JobStatus.DEAD.value), NoteStatus.DEAD.value),
    (_has_jobs(JOBS.c.status == JobStatus.FAILED.value), NoteStatus.FAILED.value),
    else_=NoteStatus.PENDING.value,
)
