"""Dead letters and quarantine, grouped the way an operator fixes them: by handler and error
(dead jobs), by source, event and reason (quarantined notifications). Both sets are small next
to the inbox and read through indexes: ``ix_jobs_due`` (status first) and the notifications'
``ix_notifications_attention``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text

from receiver.store import JOBS, NEEDS_ATTENTION, NOTES, JobStatus, NoteStatus, Store

MAX_GROUPS = 200
MAX_MEMBERS = 200


@dataclass(frozen=True, slots=True)
class Group:
    handler_or_source: str
    event: str | None
    error: str | None
    count: int
    first: datetime
    last: datetime

    @property
    def headline(self) -> str:
        """The error's first line: a traceback's last line says more, so that one if present."""
        if not self.error:
            return "(no error recorded)"
        lines = [line for line in self.error.strip().splitlines() if line.strip()]
        return lines[-1] if lines and lines[0].startswith("Traceback") else lines[0]


def dead_groups(store: Store) -> list[Group]:
    with store.reading() as conn:
        rows = conn.execute(
            select(
                JOBS.c.handler,
                JOBS.c.last_error,
                func.count(),
                func.min(JOBS.c.updated_at),
                func.max(JOBS.c.updated_at),
            )
            .where(JOBS.c.status == JobStatus.DEAD)
            .group_by(JOBS.c.handler, JOBS.c.last_error)
            .order_by(func.count().desc())
            .limit(MAX_GROUPS)
        ).all()
    return [
        Group(handler, None, error, count, first, last)
        for handler, error, count, first, last in rows
    ]


def dead_jobs(store: Store, handler: str, error: str | None) -> list[dict[str, Any]]:
    """The dead jobs of one group, newest first, with their notification's event and time."""
    error_match = JOBS.c.last_error.is_(None) if error is None else JOBS.c.last_error == error
    with store.reading() as conn:
        rows = conn.execute(
            select(
                JOBS.c.id,
                JOBS.c.notification_id,
                JOBS.c.attempts,
                JOBS.c.updated_at,
                NOTES.c.event,
                NOTES.c.received_at,
            )
            .join(NOTES, NOTES.c.id == JOBS.c.notification_id)
            .where(JOBS.c.status == JobStatus.DEAD, JOBS.c.handler == handler, error_match)
            .order_by(JOBS.c.id.desc())
            .limit(MAX_MEMBERS)
        ).mappings()
        return [dict(row) for row in rows]


def quarantine_groups(store: Store) -> list[Group]:
    with store.reading() as conn:
        rows = conn.execute(
            select(
                NOTES.c.source,
                NOTES.c.event,
                NOTES.c.error,
                func.count(),
                func.min(NOTES.c.received_at),
                func.max(NOTES.c.received_at),
            )
            .where(NOTES.c.status == NoteStatus.QUARANTINED, text(NEEDS_ATTENTION))
            .group_by(NOTES.c.source, NOTES.c.event, NOTES.c.error)
            .order_by(func.count().desc())
            .limit(MAX_GROUPS)
        ).all()
    return [
        Group(source, event, error, count, first, last)
        for source, event, error, count, first, last in rows
    ]


def quarantined(
    store: Store, source: str, event: str | None, error: str | None
) -> list[dict[str, Any]]:
    event_match = NOTES.c.event.is_(None) if event is None else NOTES.c.event == event
    error_match = NOTES.c.error.is_(None) if error is None else NOTES.c.error == error
    with store.reading() as conn:
        rows = conn.execute(
            select(NOTES.c.id, NOTES.c.received_at, NOTES.c.client_ip)
            .where(
                NOTES.c.status == NoteStatus.QUARANTINED,
                text(NEEDS_ATTENTION),
                NOTES.c.source == source,
                event_match,
                error_match,
            )
            .order_by(NOTES.c.id.desc())
            .limit(MAX_MEMBERS)
        ).mappings()
        return [dict(row) for row in rows]
