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
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import Row, Select, false, select, update
from sqlalchemy.engine import Connection

from receiver import metrics, payloads, storable
from receiver.errors import ParseError
from receiver.sources import parse
from receiver.store import Store
from receiver.store.faults import store_down
from receiver.store.rowsinsert import RowsInsert
from receiver.store.tables import JOBS, NOTES, JobStatus, NoteStatus, utcnow
from receiver.worker.routing import Routing

log = logging.getLogger("receiver.planner")

EVENT_CHARS: int = NOTES.c.event.type.length
REASON_CHARS = 1000  # an error message kept as a quarantine reason, at most

# (status, event, error): what one notification becomes.
NoteOutcome = tuple[str, str | None, str | None]


class Decided(NamedTuple):
    """What one notification becomes, the handlers it gets and, when it is routed to them, its
    body as the planner read it (``read``; None otherwise)."""

    note_id: str
    outcome: NoteOutcome
    handlers: list[str]
    read: Read | None = None


class Read(NamedTuple):
    """A routed notification's payload as parsed for routing, and as its event's model."""

    payload: Any
    typed: payloads.PayloadModel | None


class Leased(NamedTuple):
    """A job made by the plan and leased at once to the worker that planned it (its first
    attempt), with what its handler needs: the notification's row and, for the first job of a
    notification whose event was not an alias, the planner's reading of its body."""

    job_id: int
    handler: str
    row: Row[Any]  # as read before the plan: its event is the sender's
    event: str | None  # the event it was routed on, as stored by the plan
    read: Read | None


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
        select(
            NOTES.c.id,
            NOTES.c.source,
            NOTES.c.event,
            NOTES.c.body,
            NOTES.c.received_at,
            NOTES.c.headers,
            NOTES.c.dedup_key,
            NOTES.c.recovered,
        )
        .where(NOTES.c.routed == false())
        .order_by(NOTES.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def plan(store: Store, routing: Routing, limit: int = 100) -> int:
    """Give up to ``limit`` unrouted notifications their jobs, or quarantine them; how many."""
    return plan_leasing(store, routing, limit)[0]


def plan_leasing(
    store: Store, routing: Routing, limit: int = 100, *, lease: int = 0, lease_seconds: float = 0
) -> tuple[int, list[Leased]]:
    """``plan``, and the first ``lease`` of the jobs it makes leased at once to the caller for
    ``lease_seconds``, as a claim would (their first attempt): how many notifications were
    planned, and the leased jobs.

    Leasing the jobs in the plan's own transaction saves the claim's and, for the handler, a
    second parse and validation of each body: together about a fifth of the worker's CPU with a
    no-op handler (py-spy over loadtests/worker_bench.py).
    """
    note_ids: list[str] = []
    try:
        with store.relaxed_writes() as conn:
            rows = conn.execute(unrouted(limit)).all()
            note_ids = [row.id for row in rows]
            decided = [decide(routing, row.id, row.source, row.event, row.body) for row in rows]
            leased = _settle(conn, decided, rows, lease, lease_seconds)
        # Counted once the transaction is committed (receiver_quarantined_total).
        for row, (_, (status, _, _), _, _) in zip(rows, decided, strict=True):
            if status == NoteStatus.QUARANTINED.value:
                metrics.QUARANTINED.labels(row.source).inc()
        return len(rows), leased
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
    return len(note_ids), []


def decide(routing: Routing, note_id: str, source: str, event: str | None, body: bytes) -> Decided:
    """What one notification becomes, and the handlers it gets; never raises."""
    try:
        parsed = parse(source, body, event)
        why = storable.problem(parsed.event, EVENT_CHARS)
        if why is not None:
            return Decided(
                note_id,
                _quarantine(event, f"event {storable.shown(parsed.event)} cannot be stored: {why}"),
                [],
            )
        # The event column ends up holding the id the handlers were routed on (an alias's
        # target); the sender's own word stays in the stored headers.
        routed_as = routing.canonical(source, parsed.event)
        routes = routing.handlers_for(source, routed_as)
        typed = None
        if routes:
            # Typed events: validated here, once, after the ack; a body that does not fit its
            # event's model never reaches handler code. It costs 4 to 16 us a notification,
            # under half of parsing's 21 to 42 us (loadtests/payload_validation.py, noisy
            # shared machine).
            typed = payloads.validate_payload(source, routed_as, parsed.payload)
    except payloads.ValidationError as error:
        reason = storable.safe(f"payload {payloads.describe(error)}", REASON_CHARS)
        return Decided(note_id, _quarantine(routed_as, reason), [])
    except ParseError as error:
        return Decided(
            note_id,
            _quarantine(event, f"unreadable: {storable.safe(str(error), REASON_CHARS)}"),
            [],
        )
    except Exception as error:  # a routing or parsing bug met this body: it alone is set aside
        return Decided(note_id, _quarantine(event, f"cannot be routed: {_reason(error)}"), [])
    if not routes:
        why_not = f"no handler for {source} event {storable.shown(routed_as, EVENT_CHARS)}"
        return Decided(note_id, _quarantine(routed_as, why_not), [])
    # The handler reads the body again under the stored (routed) event; the planner's reading is
    # the same one only when that is the event the body was parsed under.
    read = Read(parsed.payload, typed) if routed_as == parsed.event else None
    return Decided(
        note_id, (NoteStatus.PENDING.value, routed_as, None), [r.name for r in routes], read
    )


def _quarantine(event: str | None, reason: str) -> NoteOutcome:
    return NoteStatus.QUARANTINED.value, event, reason


def _reason(error: BaseException) -> str:
    return storable.safe(f"{type(error).__name__}: {error}", REASON_CHARS)


def _settle(
    conn: Connection,
    decided: Sequence[Decided],
    rows: Sequence[Row[Any]] = (),
    lease: int = 0,
    lease_seconds: float = 0,
) -> list[Leased]:
    """Write the decisions: the notes' outcomes, and their jobs, the first ``lease`` of them
    leased to the caller (``rows``: the notes' rows, in the order of ``decided``)."""
    now = utcnow()
    at = NEW_JOBS.bind(conn.dialect, "created_at", now)
    until = NEW_JOBS.bind(conn.dialect, "lease_until", now + timedelta(seconds=lease_seconds))
    # Notes that end up with the same values share one UPDATE: a burst's notifications are
    # mostly of a few events, and one statement per note held SQLite's write lock (which
    # ingest's commits wait for) through a statement and a GIL hand-over per note.
    same: dict[NoteOutcome, list[str]] = {}
    jobs: list[tuple[Any, ...]] = []
    leasing: list[tuple[Any, ...]] = []
    for note_id, outcome, handlers, _ in decided:
        same.setdefault(outcome, []).append(note_id)
        for handler in handlers:
            if len(leasing) < lease:
                leasing.append((note_id, handler, _RUNNING, 1, at, until, None, at, at))
            else:
                jobs.append((note_id, handler, _PENDING, 0, at, None, None, at, at))
    for (status, event, reason), ids in same.items():
        conn.execute(
            update(NOTES)
            .where(NOTES.c.id.in_(ids))
            .values(routed=True, status=status, event=event, error=reason)
        )
    NEW_JOBS.run(conn, jobs)
    if not leasing:
        return []
    job_ids = {
        (note_id, handler): job_id for job_id, note_id, handler in LEASED_JOBS.run(conn, leasing)
    }
    leased: list[Leased] = []
    for row, (note_id, (_, event, _), handlers, read) in zip(rows, decided, strict=True):
        for number, handler in enumerate(handlers):
            job_id = job_ids.get((note_id, handler))
            if job_id is not None:
                # A notification's payload is handed to one handler only: another handler of it
                # parses its own copy, so that neither sees what the other changed in it.
                first = read if number == 0 else None
                leased.append(Leased(job_id, handler, row, event, first))
    return leased


# A new job's row: pending, or running its first attempt under a lease.
_JOB_COLUMNS = (
    "notification_id",
    "handler",
    "status",
    "attempts",
    "next_attempt_at",
    "lease_until",
    "last_error",
    "created_at",
    "updated_at",
)
NEW_JOBS = RowsInsert(JOBS, _JOB_COLUMNS)
LEASED_JOBS = RowsInsert(JOBS, _JOB_COLUMNS, returning=("id", "notification_id", "handler"))
_PENDING = JobStatus.PENDING.value
_RUNNING = JobStatus.RUNNING.value


def _plan_alone(store: Store, routing: Routing, note_id: str) -> None:
    """Plan one notification in its own transaction; if the store refuses that, quarantine it."""
    one = unrouted(1).where(NOTES.c.id == note_id)
    try:
        with store.relaxed_writes() as conn:
            row = conn.execute(one).first()
            if row is not None:
                decided = decide(routing, row.id, row.source, row.event, row.body)
                _settle(conn, [decided])
        if row is not None and decided.outcome[0] == NoteStatus.QUARANTINED.value:
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
