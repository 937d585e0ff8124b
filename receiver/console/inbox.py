"""The console's reads of the notifications table, fast on millions of rows without an index per
filter (every index is written by every insert, and ingest is the hot path).

How each page stays bounded:

- newest first is the primary key read backwards (ids are time-ordered ULIDs), and a page is the
  next ``PAGE`` rows below a cursor id (keyset pagination; never OFFSET);
- a time range is an id range (``receiver.ids.id_floor``), with received_at deciding exactly;
- a status an operator acts on (pending, failed, dead, quarantined) is read from the partial index
  ``ix_notifications_attention`` (status, id), which holds only those;
- every other filter (source, event, done, duplicate, text in the body) scans a window of at most
  ``WINDOW`` rows below the cursor: the page says how far back it looked, and "older" goes on from
  there. Text is searched in the raw body bytes (a Duimp number, a CNPJ, any word), so a search
  costs the same on SQLite and PostgreSQL, needs no second copy of each body, and is bounded;
- counts per status are capped at ``COUNT_CAP`` (shown as "10000+"), through the same index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, ColumnElement, func, literal, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnCollection, Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.functions import FunctionElement

from receiver.ids import id_floor, id_time
from receiver.store import ATTENTION_STATUSES, NEEDS_ATTENTION, NOTES, Store, utcnow

PAGE = 50
# Rows looked at per page view when a filter has no index. A text found nowhere reads 20,000
# bodies: 49 ms on SQLite, 48 ms on PostgreSQL, one million rows (loadtests/console_bench.py;
# 110-160 ms on SQLite while other benchmarks shared the 2 cores).
WINDOW = 20_000
COUNT_CAP = 10_000
ID_TEXT = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
# How much earlier than its received_at an id can be (receiver.store.facade.ID_LEAD).
ID_LEAD = timedelta(hours=1)

LISTED = (
    NOTES.c.id,
    NOTES.c.source,
    NOTES.c.event,
    NOTES.c.status,
    NOTES.c.received_at,
    NOTES.c.client_ip,
    NOTES.c.duplicate_of,
    NOTES.c.recovered,
)


class body_contains(FunctionElement[bool]):
    """The body holds these bytes: ``instr`` on SQLite, ``position`` on PostgreSQL's bytea.
    The only dialect difference of the console's reads."""

    type = Boolean()
    inherit_cache = True
    name = "body_contains"


@compiles(body_contains)
def _instr(element: body_contains, compiler: SQLCompiler, **kw: Any) -> str:
    body, needle = list(element.clauses)
    return f"instr({compiler.process(body, **kw)}, {compiler.process(needle, **kw)}) > 0"


@compiles(body_contains, "postgresql")
def _position(element: body_contains, compiler: SQLCompiler, **kw: Any) -> str:
    body, needle = list(element.clauses)
    return f"position({compiler.process(needle, **kw)} in {compiler.process(body, **kw)}) > 0"


@dataclass(frozen=True, slots=True)
class InboxFilter:
    source: str | None = None
    event: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None  # an id, or bytes to find in the body
    before: str | None = None  # the cursor: rows with a smaller id

    def as_query(self) -> dict[str, str]:
        """The filter as the inbox's query string (without the cursor)."""
        values = {
            "source": self.source,
            "event": self.event,
            "status": self.status,
            "since": self.since.strftime("%Y-%m-%dT%H:%M") if self.since else None,
            "until": self.until.strftime("%Y-%m-%dT%H:%M") if self.until else None,
            "q": self.text,
        }
        return {key: value for key, value in values.items() if value}


@dataclass(frozen=True, slots=True)
class InboxPage:
    rows: list[dict[str, Any]]
    next_before: str | None  # the cursor of the next (older) page, None at the end
    scanned_to: datetime | None = None  # a window ran out here without filling the page
    exact_id: bool = False


@dataclass(frozen=True, slots=True)
class StatusCounts:
    attention: dict[str, int]  # capped at COUNT_CAP (+1 means "more")
    last_hour: dict[str, int] = field(default_factory=dict)
    cap: int = COUNT_CAP


def _upper_id(where: InboxFilter) -> str | None:
    bounds = []
    if where.before:
        bounds.append(where.before)
    if where.until is not None:
        # An id is made before its received_at: received before `until` means an id below it.
        bounds.append(id_floor(where.until))
    return min(bounds) if bounds else None


def _lower_id(where: InboxFilter) -> str | None:
    return id_floor(where.since - ID_LEAD) if where.since is not None else None


def _conditions(
    where: InboxFilter, *, window_floor: str | None
) -> list[ColumnElement[bool] | TextClause]:
    found: list[ColumnElement[bool] | TextClause] = []
    upper, lower = _upper_id(where), _lower_id(where)
    if upper is not None:
        found.append(NOTES.c.id < upper)
    floor = max(filter(None, (lower, window_floor)), default=None)
    if floor is not None:
        found.append(NOTES.c.id >= floor)
    if where.since is not None:
        found.append(NOTES.c.received_at >= where.since)
    if where.until is not None:
        found.append(NOTES.c.received_at < where.until)
    found.extend(_filters(NOTES.c, where))
    if where.status in ATTENTION_STATUSES:
        # Word for word the index's predicate, so SQLite's planner may use the partial index.
        found.append(text(NEEDS_ATTENTION))
    return found


def _filters(columns: ColumnCollection[str, Any], where: InboxFilter) -> list[Any]:
    """The source, event, status and text filters on ``columns``: the table's, or a window's."""
    found: list[Any] = []
    if where.source:
        found.append(columns.source == where.source)
    if where.event:
        found.append(columns.event == where.event)
    if where.status:
        found.append(columns.status == where.status)
    if where.text:
        found.append(body_contains(columns.body, literal(where.text.encode("utf-8"))))
    return found


def _needs_window(where: InboxFilter) -> bool:
    indexed = where.status in ATTENTION_STATUSES
    return not indexed and bool(where.source or where.event or where.status or where.text)


def _window_floor(conn: Connection, where: InboxFilter) -> str | None:
    """The smallest id among the WINDOW newest rows below the cursor (within the time range);
    None when fewer rows than that are left (the window reaches the end)."""
    scope = _conditions(_range_only(where), window_floor=None)
    ids = select(NOTES.c.id).where(*scope).order_by(NOTES.c.id.desc()).limit(WINDOW)
    inner = ids.subquery()
    count, smallest = conn.execute(select(func.count(), func.min(inner.c.id))).one()
    return str(smallest) if count >= WINDOW else None


def _range_only(where: InboxFilter) -> InboxFilter:
    return InboxFilter(since=where.since, until=where.until, before=where.before)


def _windowed_query(where: InboxFilter) -> Select[Any]:
    """The filters applied to the WINDOW newest rows of the range, newest first. The window is
    read lazily (a co-routine on SQLite, a limited index scan on PostgreSQL): a filter most rows
    pass stops after a page's worth, a rare one after WINDOW rows at most. No ORDER BY outside:
    the window's own order is kept, and one outside would make both engines sort the whole
    window before the first row."""
    columns = [*LISTED, NOTES.c.body] if where.text else list(LISTED)
    window = (
        select(*columns)
        .where(*_conditions(_range_only(where), window_floor=None))
        .order_by(NOTES.c.id.desc())
        .limit(WINDOW)
        .subquery()
    )
    listed = [window.c[column.name] for column in LISTED]
    return select(*listed).where(*_filters(window.c, where)).limit(PAGE + 1)


def inbox_page(store: Store, where: InboxFilter) -> InboxPage:
    """One page of the inbox, newest first."""
    windowed = _needs_window(where)
    with store.reading() as conn:
        if where.text and ID_TEXT.fullmatch(where.text.strip().upper()):
            note_id = where.text.strip().upper()
            exact = conn.execute(select(*LISTED).where(NOTES.c.id == note_id)).mappings().all()
            if exact:
                return InboxPage([dict(row) for row in exact], None, exact_id=True)
        if windowed:
            query = _windowed_query(where)
        else:
            query = (
                select(*LISTED)
                .where(*_conditions(where, window_floor=None))
                .order_by(NOTES.c.id.desc())
                .limit(PAGE + 1)
            )
        rows = [dict(row) for row in conn.execute(query).mappings()]
        if len(rows) > PAGE:
            return InboxPage(rows[:PAGE], rows[PAGE - 1]["id"])
        # Fewer than a page: the end of the range, or of the window (older rows remain).
        floor = _window_floor(conn, where) if windowed else None
    if floor is not None:
        return InboxPage(rows, floor, scanned_to=id_time(floor))
    return InboxPage(rows, None)


def status_counts(store: Store, now: datetime | None = None) -> StatusCounts:
    """Per status an operator acts on, how many (capped); and everything of the last hour."""
    now = now or utcnow()
    attention: dict[str, int] = {}
    with store.reading() as conn:
        for status in ATTENTION_STATUSES:
            capped = (
                select(literal(1))
                .select_from(NOTES)
                .where(NOTES.c.status == status, text(NEEDS_ATTENTION))
                .limit(COUNT_CAP + 1)
                .subquery()
            )
            attention[status] = int(
                conn.execute(select(func.count()).select_from(capped)).scalar_one()
            )
        hour_ago = now - timedelta(hours=1)
        recent = conn.execute(
            select(NOTES.c.status, func.count())
            .where(NOTES.c.id >= id_floor(hour_ago - ID_LEAD), NOTES.c.received_at >= hour_ago)
            .group_by(NOTES.c.status)
        ).all()
    return StatusCounts(attention, {str(status): int(count) for status, count in recent})


def older(where: InboxFilter, page: InboxPage) -> InboxFilter | None:
    return replace(where, before=page.next_before) if page.next_before else None
