"""Replay: run handlers again for stored notifications, with the same idempotency keys.

What ``receiver replay`` does: notifications by id (a receipt stands for its original), the dead
letters, or those received since a date (of one event, or in given statuses, such as
``quarantined``), or one handler of one notification (``replay_handler``: ``receiver replay ID
--handler NAME``). A replayed notification is routed again by the next plan, or its jobs start
over from their first attempt; a running worker picks them up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from receiver.store import JOBS, NOTES, JobStatus, NoteStatus, Store, received_since, utcnow
from receiver.worker.jobs import lock_notes, refresh_statuses


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


@dataclass(frozen=True, slots=True)
class DeadFilter:
    """Which dead-lettered jobs: all, or of one handler, one error, some job ids (together)."""

    handler: str | None = None
    error: str | None = None
    job_ids: Sequence[int] | None = None
    without_error: bool = False  # only jobs with no error recorded (error is then ignored)

    def conditions(self) -> list[ColumnElement[bool]]:
        found = [JOBS.c.status == JobStatus.DEAD]
        if self.handler is not None:
            found.append(JOBS.c.handler == self.handler)
        if self.without_error:
            found.append(JOBS.c.last_error.is_(None))
        elif self.error is not None:
            found.append(JOBS.c.last_error == self.error)
        if self.job_ids is not None:
            found.append(JOBS.c.id.in_(list(self.job_ids)))
        return found


def count_dead(store: Store, which: DeadFilter = DeadFilter()) -> int:
    """How many jobs ``replay_dead`` would start over (the console's confirmation)."""
    with store.reading() as conn:
        query = select(func.count()).select_from(JOBS).where(*which.conditions())
        return int(conn.execute(query).scalar_one())


def replay_dead(store: Store, which: DeadFilter = DeadFilter()) -> int:
    """Run dead-lettered jobs (all, or those ``which`` picks) again from their first attempt;
    done handlers are not repeated. Returns how many notifications they belong to."""
    now = utcnow()
    conditions = which.conditions()
    with store.engine.begin() as conn:
        dead = select(JOBS.c.notification_id).where(*conditions)
        lock_notes(conn, set(conn.execute(dead).scalars()))
        note_ids = set(
            conn.execute(
                update(JOBS)
                .where(*conditions)
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
        refresh_statuses(conn, note_ids)
    return len(note_ids)


def _matching(
    since: datetime | None,
    event: str | None,
    statuses: Sequence[str],
    source: str | None = None,
    error: str | None = None,
    without_error: bool = False,
) -> Select[Any]:
    query = select(NOTES.c.id).where(NOTES.c.duplicate_of.is_(None))
    if since is not None:
        query = query.where(received_since(since))
    if event is not None:
        query = query.where(NOTES.c.event == event)
    if statuses:
        query = query.where(NOTES.c.status.in_(list(statuses)))
    if source is not None:
        query = query.where(NOTES.c.source == source)
    if without_error:
        query = query.where(NOTES.c.error.is_(None))
    elif error is not None:
        query = query.where(NOTES.c.error == error)
    return query


def count_matching(
    store: Store,
    since: datetime | None = None,
    event: str | None = None,
    statuses: Sequence[str] = (),
    source: str | None = None,
    error: str | None = None,
    without_error: bool = False,
) -> int:
    """How many ``replay_matching`` would replay with the same arguments."""
    inner = _matching(since, event, statuses, source, error, without_error).subquery()
    with store.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(inner)).scalar_one())


def replay_matching(
    store: Store,
    since: datetime | None = None,
    event: str | None = None,
    statuses: Sequence[str] = (),
    source: str | None = None,
    error: str | None = None,
    without_error: bool = False,
) -> int:
    """Replay originals received since a date, optionally of one event or source, in given
    statuses, with a given error or none."""
    query = _matching(since, event, statuses, source, error, without_error)
    with store.engine.begin() as conn:
        note_ids = list(conn.execute(query).scalars())
        _unroute(conn, note_ids)
    return len(note_ids)


class ReplayRefused(ValueError):
    """``replay_handler`` cannot do it: the message says why and what to do instead."""


@dataclass(frozen=True, slots=True)
class HandlerReplay:
    note_id: str  # the original's (a receipt stands for it)
    handler: str  # the full name
    previous_status: str
    previous_error: str | None


def replay_handler(store: Store, note_id: str, handler: str) -> HandlerReplay:
    """Run one handler of one notification again, from its first attempt, and only that one (its
    other handlers are left as they are). ``handler`` is its full name
    (``handlers.duimp.fetch_duimp``) or the end of it after a dot (``fetch_duimp``). Raises
    KeyError for an unknown notification, ``ReplayRefused`` when the notification has no such job
    (not routed yet, quarantined, another handler) or the job is running now."""
    now = utcnow()
    with store.engine.begin() as conn:
        found = conn.execute(
            select(NOTES.c.id, NOTES.c.duplicate_of).where(NOTES.c.id == note_id)
        ).first()
        if found is None:
            raise KeyError(note_id)
        original = found[1] or found[0]
        lock_notes(conn, {original})
        jobs = conn.execute(
            select(JOBS.c.id, JOBS.c.handler, JOBS.c.status, JOBS.c.last_error).where(
                JOBS.c.notification_id == original
            )
        ).all()
        chosen = [j for j in jobs if j.handler == handler or j.handler.endswith(f".{handler}")]
        if len(chosen) != 1:
            names = ", ".join(sorted(j.handler for j in jobs)) or "none"
            if not jobs:
                why = (
                    f"notification {original} has no handler jobs (not routed yet, or "
                    f"quarantined: `receiver replay {original}` routes it again)"
                )
            elif not chosen:
                why = f"notification {original} has no job of handler {handler!r} (its: {names})"
            else:
                why = f"{handler!r} names several handlers of notification {original}: {names}"
            raise ReplayRefused(why)
        job = chosen[0]
        if job.status == JobStatus.RUNNING:
            raise ReplayRefused(
                f"handler {job.handler} of notification {original} is running now; replay it "
                "once it has finished"
            )
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id == job.id)
            .values(
                status=JobStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                lease_until=None,
                last_error=None,
                updated_at=now,
            )
        )
        refresh_statuses(conn, {original})
    return HandlerReplay(original, job.handler, str(job.status), job.last_error)
