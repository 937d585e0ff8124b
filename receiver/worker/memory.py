"""The in-memory twins of the store's job queue and result store, for the worker's unit tests.

As procrastinate ships an ``InMemoryConnector`` beside its database connector, ``MemoryJobQueue``
keeps notifications and jobs in dicts and answers the ``JobQueue`` protocol as ``StoreJobQueue``
does: the planner's own decisions (``planner.decide``), claims ordered by due time, leases whose
attempt number fences off a worker that lost one, releases that do not count the attempt,
burials of abandoned last attempts, and a notification's status following its jobs'
(``jobs.note_status``). ``tests/integration/worker`` runs the same queue scenarios against both,
so the twin cannot drift from the store unseen. ``MemoryResults`` keeps handler results as
``StoreResults`` does, checked and serialised the same way.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from receiver import storable
from receiver.ids import new_id
from receiver.sources import dedup_key
from receiver.store import JobStatus, NoteStatus, utcnow
from receiver.store.rows import EVENT_CHARS
from receiver.worker import planner
from receiver.worker.jobs import (
    ABANDONED,
    CLAIMABLE,
    ClaimedJob,
    Outcome,
    attempt_row,
    note_status,
)
from receiver.worker.results import Result
from receiver.worker.routing import Notification, Routing


@dataclass
class MemoryNote:
    """A stored notification, as the ``notifications`` table holds one."""

    id: str
    source: str
    event: str | None
    received_at: datetime
    body: bytes
    headers: dict[str, str]
    dedup_key: str
    status: str = NoteStatus.PENDING.value
    routed: bool = False
    error: str | None = None
    duplicate_of: str | None = None
    recovered: bool = False


@dataclass
class MemoryJob:
    """One (notification, handler) job, as the ``jobs`` table holds one."""

    id: int
    note_id: str
    handler: str
    created_at: datetime
    next_attempt_at: datetime
    status: str = JobStatus.PENDING.value
    attempts: int = 0
    lease_until: datetime | None = None
    last_error: str | None = None


@dataclass
class MemoryJobQueue:
    """A ``JobQueue`` held in memory. Safe to call from several threads (the worker does).

    ``clock`` is what due times and leases are judged by (a test may move it).
    """

    clock: Callable[[], datetime] = utcnow
    notes: dict[str, MemoryNote] = field(default_factory=dict)
    jobs: dict[int, MemoryJob] = field(default_factory=dict)
    # The ``job_attempts`` rows, as StoreJobQueue.finish_many writes them.
    attempts: list[dict[str, object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- what ingest would have stored ---------------------------------------------------

    def receive(
        self,
        source: str,
        body: bytes,
        *,
        event: str | None = None,
        headers: Mapping[str, str] | None = None,
        recovered: bool = False,
    ) -> str:
        """Store a notification as ingest does, and its id: an original, or a receipt of the
        original with the same content (handlers run for the original only). An event the store
        cannot hold is left out, and the notification kept quarantined with the reason."""
        key = dedup_key(source, body)
        with self._lock:
            original = next(
                (n.id for n in self.notes.values() if n.dedup_key == key and not n.duplicate_of),
                None,
            )
            note = MemoryNote(new_id(), source, event, self.clock(), body, dict(headers or {}), key)
            note.recovered = recovered
            if original is not None:
                note.duplicate_of, note.status, note.routed = original, NoteStatus.DUPLICATE, True
            if event is not None and (why := storable.problem(event, EVENT_CHARS)) is not None:
                note.event, note.error = (
                    None,
                    f"event {storable.shown(event)} cannot be stored: {why}",
                )
                if original is None:
                    note.status, note.routed = NoteStatus.QUARANTINED, True
            self.notes[note.id] = note
            return note.id

    def jobs_of(self, note_id: str) -> list[MemoryJob]:
        with self._lock:
            return [job for job in self.jobs.values() if job.note_id == note_id]

    def attempts_of(self, note_id: str) -> list[dict[str, object]]:
        """The recorded attempts of the notification's jobs, as ``Store.attempts_of`` gives them."""
        with self._lock:
            return [row for row in self.attempts if row["notification_id"] == note_id]

    # --- the JobQueue protocol -----------------------------------------------------------

    def plan(self, routing: Routing, limit: int) -> int:
        return self.plan_leasing(routing, limit, 0, 0.0)[0]

    def plan_leasing(
        self, routing: Routing, limit: int, lease: int, lease_seconds: float
    ) -> tuple[int, list[ClaimedJob]]:
        with self._lock:
            unrouted = sorted(
                (n for n in self.notes.values() if not n.routed and not n.duplicate_of),
                key=lambda note: note.id,
            )[:limit]
            now = self.clock()
            leased: list[ClaimedJob] = []
            for note in unrouted:
                decided = planner.decide(routing, note.id, note.source, note.event, note.body)
                note.routed = True
                note.status, note.event, note.error = decided.outcome
                for number, handler in enumerate(decided.handlers):
                    job = MemoryJob(len(self.jobs) + 1, note.id, handler, now, now)
                    self.jobs[job.id] = job
                    if len(leased) < lease:
                        job.status, job.attempts = JobStatus.RUNNING.value, 1
                        job.lease_until = now + timedelta(seconds=lease_seconds)
                        read = decided.read if number == 0 else None
                        leased.append(self._claimed(job, note, read))
            return len(unrouted), leased

    def claim(self, limit: int, lease_seconds: float) -> list[ClaimedJob]:
        with self._lock:
            now = self.clock()
            due = sorted(
                (
                    job
                    for job in self.jobs.values()
                    if (job.status in CLAIMABLE and job.next_attempt_at <= now)
                    or (
                        job.status == JobStatus.RUNNING
                        and job.lease_until is not None
                        and job.lease_until < now
                    )
                ),
                key=lambda job: (job.next_attempt_at, job.id),
            )[:limit]
            claimed: list[ClaimedJob] = []
            for job in due:
                job.status = JobStatus.RUNNING.value
                job.attempts += 1
                job.lease_until = now + timedelta(seconds=lease_seconds)
                claimed.append(self._claimed(job, self.notes[job.note_id]))
            return claimed

    def bury_abandoned(self, max_attempts: int) -> int:
        with self._lock:
            now = self.clock()
            abandoned = [
                job
                for job in self.jobs.values()
                if job.status == JobStatus.RUNNING
                and job.lease_until is not None
                and job.lease_until < now
                and job.attempts >= max_attempts
            ]
            for job in abandoned:
                job.status, job.lease_until, job.last_error = JobStatus.DEAD.value, None, ABANDONED
            buried = {job.note_id for job in abandoned}
            self._refresh(buried)
            return len(buried)

    def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        with self._lock:
            now = self.clock()
            kept: list[bool] = []
            for outcome in outcomes:
                job = self.jobs.get(outcome.job.job_id)
                ours = self._still_ours(job, outcome.job)
                if ours and job is not None:
                    job.status, job.lease_until = outcome.status.value, None
                    job.last_error = outcome.error
                    job.next_attempt_at = now + timedelta(seconds=outcome.delay)
                    if (row := attempt_row(outcome)) is not None:
                        self.attempts.append(row)
                kept.append(ours)
            self._refresh({o.job.note_id for o, ok in zip(outcomes, kept, strict=True) if ok})
            return kept

    def release(self, jobs: Iterable[ClaimedJob]) -> None:
        with self._lock:
            now = self.clock()
            for claimed in jobs:
                job = self.jobs.get(claimed.job_id)
                if self._still_ours(job, claimed) and job is not None:
                    job.status, job.lease_until = JobStatus.PENDING.value, None
                    job.attempts -= 1
                    job.next_attempt_at = now

    def counts(self) -> tuple[dict[str, int], float]:
        with self._lock:
            counts: dict[str, int] = {}
            for job in self.jobs.values():
                counts[job.status] = counts.get(job.status, 0) + 1
            waiting = [job.created_at for job in self.jobs.values() if job.status in CLAIMABLE]
            age = max(0.0, (self.clock() - min(waiting)).total_seconds()) if waiting else 0.0
            return counts, age

    # --- as the store's statements do it -------------------------------------------------

    @staticmethod
    def _claimed(job: MemoryJob, note: MemoryNote, read: planner.Read | None = None) -> ClaimedJob:
        """The job as its worker gets it, with the planner's reading of the note if it has one
        (``jobs.leased_job``)."""
        headers = dict(note.headers)
        notification = None
        if read is not None:
            notification = Notification(
                id=note.id,
                source=note.source,
                event=note.event,
                received_at=note.received_at,
                payload=read.payload,
                body=note.body,
                headers=headers,
                idempotency_key=note.dedup_key,
                recovered=note.recovered,
                parsed=read.typed,
            )
        return ClaimedJob(
            job_id=job.id,
            handler=job.handler,
            attempt=job.attempts,
            note_id=note.id,
            source=note.source,
            event=note.event,
            received_at=note.received_at,
            body=note.body,
            headers=headers,
            dedup_key=note.dedup_key,
            recovered=note.recovered,
            notification=notification,
        )

    @staticmethod
    def _still_ours(job: MemoryJob | None, claimed: ClaimedJob) -> bool:
        """The attempt number fences off a worker whose lease ran out (``jobs.still_ours``)."""
        return (
            job is not None and job.status == JobStatus.RUNNING and job.attempts == claimed.attempt
        )

    def _refresh(self, note_ids: set[str]) -> None:
        for note_id in note_ids:
            found = {job.status for job in self.jobs.values() if job.note_id == note_id}
            if found:
                self.notes[note_id].status = note_status(found).value


class MemoryResults:
    """A ``ResultStore`` held in memory: saves are checked and serialised as ``StoreResults``
    does (``Result.of``), so a value the store could not hold fails here too."""

    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], str] = {}

    async def save(self, kind: str, key: str, value: Any) -> None:
        result = Result.of(kind, key, value)
        self.saved[(result.kind, result.key)] = result.value_json

    async def load(self, kind: str, key: str) -> Any | None:
        text = self.saved.get((kind, key))
        return None if text is None else json.loads(text)
