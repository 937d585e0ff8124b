"""Routing stored notifications into jobs: one per matching handler, or quarantine with a reason.

The planner reads the oldest unrouted notifications and settles them in one transaction, before
any job is claimed. Whatever one notification holds, it is settled on its own: anything its parser
or the routing raises quarantines it with the exception's type and message; an event the store
cannot hold (too long, NUL, a lone surrogate) quarantines it with "event ... cannot be stored"; a
payload that does not fit its event's model (``receiver.payloads``) quarantines it with the
validation error ("payload does not fit DuimpEvent: identificacao: Field required");
and if writing the batch's outcome still fails for a reason that is not the store being down,
the notes are planned again one by one, each in its own transaction, so that only the one the
store refuses is quarantined ("cannot be stored") and the others get their jobs. No notification
can make planning fail on every poll.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, false, insert, select, update
from sqlalchemy.engine import Connection

from receiver import metrics, payloads, storable
from receiver.errors import ParseError
from receiver.sources import parse
from receiver.store import Store
from receiver.store.faults import store_down
from receiver.store.tables import JOBS, NOTES, JobStatus, NoteStatus, utcnow
from receiver.worker.routing import Routing

log = logging.getLogger("receiver.planner")

EVENT_CHARS: int = NOTES.c.event.type.length
REASON_CHARS = 1000  # an error message kept as a quarantine reason, at most

# (status, event, error): what one notification becomes.
NoteOutcome = tuple[str, str | None, str | None]


def unrouted(limit: int) -> Select[Any]:
    """The oldest originals that have no jobs yet, through the partial index that holds only them.

    The condition is spelled as the index's (``routed = false``): neither SQLite nor PostgreSQL
    proves the index usable from ``routed IS false``, and then every plan scanned the whole table.
    And it is the index's condition alone: a duplicate is stored routed (``store.batch``), so
    ``duplicate_of IS NULL`` added nothing but another index to choose, and PostgreSQL, on a table
    filled faster than autovacuum analyses it, chose the dedup index and sorted every unrouted
    row, bodies and all, on each plan (56 ms for 64 of 7,440 unrouted; 93 ms per plan in
    loadtests/worker_bench.py, 370 jobs/s).
    """
    return (
        select(NOTES.c.id, NOTES.c.source, NOTES.c.event, NOTES.c.body)
        .where(NOTES.c.routed == false())
        .order_by(NOTES.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def plan(store: Store, routing: Routing, limit: int = 100) -> int:
    """Give up to ``limit`` unrouted notifications their jobs, or quarantine them; how many."""
    note_ids: list[str] = []
    try:
        with store.relaxed_writes() as conn:
            rows = conn.execute(unrouted(limit)).all()
            note_ids = [row[0] for row in rows]
            decided = [decide(routing, *row) for row in rows]
            _settle(conn, decided)
        # Counted once the transaction is committed (receiver_quarantined_total).
        sources = {row[0]: row[1] for row in rows}
        for note_id, (status, _, _), _ in decided:
            if status == NoteStatus.QUARANTINED.value:
                metrics.QUARANTINED.labels(sources[note_id]).inc()
        return len(rows)
    except Exception as error:
        if store_down(error) or not note_ids:
            raise
        log.warning(
            "the store refused the plan of %d notifications together (%s); planning them one "
            "by one",
            len(note_ids),
            _reason(error),
        )
    for note_id in note_ids:
        _plan_alone(store, routing, note_id)
    return len(note_ids)


def decide(
    routing: Routing, note_id: str, source: str, event: str | None, body: bytes
) -> tuple[str, NoteOutcome, list[str]]:
    """What one notification becomes, and the handlers it gets; never raises."""
    try:
        parsed = parse(source, body, event)
        why = storable.problem(parsed.event, EVENT_CHARS)
        if why is not None:
            return (
                note_id,
                _quarantine(event, f"event {storable.shown(parsed.event)} cannot be stored: {why}"),
                [],
            )
        # The event column ends up holding the id the handlers were routed on (an alias's
        # target); the sender's own word stays in the stored headers.
        routed_as = routing.canonical(source, parsed.event)
        routes = routing.handlers_for(source, routed_as)
        if routes:
            # Typed events: validated here, once, after the ack; a body that does not fit its
            # event's model never reaches handler code. It costs 4 to 16 us a notification,
            # under half of parsing's 21 to 42 us (loadtests/payload_validation.py, noisy
            # shared machine).
            payloads.validate_payload(source, routed_as, parsed.payload)
    except payloads.ValidationError as error:
        reason = storable.safe(f"payload {payloads.describe(error)}", REASON_CHARS)
        return note_id, _quarantine(routed_as, reason), []
    except ParseError as error:
        return (
            note_id,
            _quarantine(event, f"unreadable: {storable.safe(str(error), REASON_CHARS)}"),
            [],
        )
    except Exception as error:  # a routing or parsing bug met this body: it alone is set aside
        return note_id, _quarantine(event, f"cannot be routed: {_reason(error)}"), []
    if not routes:
        why_not = f"no handler for {source} event {storable.shown(routed_as, EVENT_CHARS)}"
        return note_id, _quarantine(routed_as, why_not), []
    return note_id, (NoteStatus.PENDING.value, routed_as, None), [r.name for r in routes]


def _quarantine(event: str | None, reason: str) -> NoteOutcome:
    return NoteStatus.QUARANTINED.value, event, reason


def _reason(error: BaseException) -> str:
    return storable.safe(f"{type(error).__name__}: {error}", REASON_CHARS)


def _settle(conn: Connection, decided: Sequence[tuple[str, NoteOutcome, list[str]]]) -> None:
    now = utcnow()
    # Notes that end up with the same values share one UPDATE: a burst's notifications are
    # mostly of a few events, and one statement per note held SQLite's write lock (which
    # ingest's commits wait for) through a statement and a GIL hand-over per note.
    same: dict[NoteOutcome, list[str]] = {}
    jobs: list[dict[str, Any]] = []
    for note_id, outcome, handlers in decided:
        same.setdefault(outcome, []).append(note_id)
        jobs.extend(_new_job(note_id, handler, now) for handler in handlers)
    for (status, event, reason), ids in same.items():
        conn.execute(
            update(NOTES)
            .where(NOTES.c.id.in_(ids))
            .values(routed=True, status=status, event=event, error=reason)
        )
    if jobs:
        conn.execute(insert(JOBS), jobs)


def _plan_alone(store: Store, routing: Routing, note_id: str) -> None:
    """Plan one notification in its own transaction; if the store refuses that, quarantine it."""
    one = unrouted(1).where(NOTES.c.id == note_id)
    try:
        with store.relaxed_writes() as conn:
            row = conn.execute(one).first()
            if row is not None:
                decided = decide(routing, *row)
                _settle(conn, [decided])
        if row is not None and decided[1][0] == NoteStatus.QUARANTINED.value:
            metrics.QUARANTINED.labels(row[1]).inc()
        return
    except Exception as error:
        if store_down(error):
            raise
        refused = error
    reason = f"cannot be stored: {_reason(refused)}"
    log.error("notification %s quarantined: its plan %s", note_id, reason)
    with store.relaxed_writes() as conn:
        quarantined = conn.execute(
            update(NOTES)
            .where(NOTES.c.id == note_id, NOTES.c.routed == false())
            .values(routed=True, status=NoteStatus.QUARANTINED.value, error=reason)
            .returning(NOTES.c.source)
        ).scalars()
        sources = list(quarantined)
    for source in sources:
        metrics.QUARANTINED.labels(source).inc()


def _new_job(note_id: str, handler: str, now: datetime) -> dict[str, Any]:
    return {
        "notification_id": note_id,
        "handler": handler,
        "status": JobStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "lease_until": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
    }
