"""A batch of notifications as rows: the multi-row insert, its statements, and its receipts.

``commit_batch`` inserts a batch inside the caller's transaction; the writers (``BatchWriter``, in
the thread committer or the writer process) and the synchronous append of recovery use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from itertools import chain
from typing import Any

from sqlalchemy.engine import Connection, Dialect

from receiver import storable
from receiver.sources import dedup_key
from receiver.store.committer import Incoming, Receipt
from receiver.store.rows import EVENT_CHARS, NOTE_ROW, NoteStatus, utcnow


class BatchInsert:
    """Multi-row ``INSERT ... ON CONFLICT DO NOTHING`` statements for one dialect.

    One statement carries a whole batch (up to ``chunk`` rows), so a commit costs three driver
    calls (BEGIN, INSERT, COMMIT) whatever its size, and the database plans and runs one
    statement, not one per row. Statements are kept by row count, at most ``chunk`` of them:
    within sqlite3's statement cache (128), and on PostgreSQL prepared once per connection, within
    psycopg's (100). The row count the driver reports tells whether any key was already stored:
    when it equals the number of rows, none was, and no lookup is needed.

    Statements run on the driver's connection, in whatever transaction it has open, not through
    SQLAlchemy's execution (about 20 us per statement, on the path every request waits on).
    """

    SQLITE_CHUNK = 128  # rows per statement at most: 13 x 128 parameters, far below every limit
    POSTGRES_CHUNK = 64
    LOOKUP_CHUNK = 500  # dedup keys per lookup, below SQLite's oldest limit (999 parameters)

    # What a row holds, in order: the columns rows.NOTE_ROW names (and row() returns).
    COLUMNS = tuple(NOTE_ROW.c.keys())

    def __init__(self, dialect: Dialect) -> None:
        # PostgreSQL: numbered placeholders on psycopg's RawCursor, sent as they are, and one
        # prepared statement per row count. With "%s", psycopg rewrites a statement longer than
        # 4 KiB on every call (it caches short ones only); with a one-row statement and
        # executemany (what this replaced), the server executes the rows one by one. Measured at
        # 64 connections and 2 processes: writers 57-63 -> 43-45 us of CPU per notification,
        # PostgreSQL 41 -> 33-38, requests per second +11%.
        self._raw_cursor: Callable[[Any], Any] | None = None
        if dialect.name == "postgresql":
            from psycopg import RawCursor  # not for SQLite: its writer process stays smaller

            self._raw_cursor = RawCursor
        self.chunk = self.POSTGRES_CHUNK if self._raw_cursor else self.SQLITE_CHUNK
        if self._raw_cursor is None and dialect.paramstyle != "qmark":
            raise TypeError(f"no batch insert for the {dialect.name} driver's placeholders")
        # Table and column names are our constants; every value goes through a parameter.
        self._head = f"INSERT INTO {NOTE_ROW.name} ({', '.join(self.COLUMNS)}) VALUES "  # noqa: S608
        self._tail = " ON CONFLICT (dedup_key) WHERE duplicate_of IS NULL DO NOTHING"
        self._sql: dict[int, str] = {}
        self._lookup_head = (
            f"SELECT dedup_key, id FROM {NOTE_ROW.name} "  # noqa: S608 (our names; values bound)
            "WHERE duplicate_of IS NULL AND dedup_key IN "
        )
        # Bind processors, applied once here or once per batch instead of once per value.
        received_at = NOTE_ROW.c.received_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._received_at: Callable[[Any], Any] = received_at or (lambda value: value)
        boolean = NOTE_ROW.c.routed.type.dialect_impl(dialect).bind_processor(dialect)
        self._true = boolean(True) if boolean else True
        self._false = boolean(False) if boolean else False
        # The driver's binary wrapper, if the dialect has one (sqlite3.Binary, psycopg.Binary).
        self._body = NOTE_ROW.c.body.type.dialect_impl(dialect).bind_processor(dialect)
        # Hex in, 32 raw bytes out (rows.Digest), then the driver's binary wrapper if any.
        digest = NOTE_ROW.c.dedup_key.type.dialect_impl(dialect).bind_processor(dialect)
        assert digest is not None
        self._digest = digest
        for name in self.COLUMNS:
            if name not in ("received_at", "routed", "recovered", "body", "dedup_key"):
                column_type = NOTE_ROW.c[name].type
                if column_type.dialect_impl(dialect).bind_processor(dialect) is not None:
                    raise TypeError(f"column {name} needs a bind processor BatchInsert lacks")

    def _statement(self, rows: int) -> str:
        sql = self._sql.get(rows)
        if sql is None:
            width = len(self.COLUMNS)
            values = ", ".join(
                "(" + ", ".join(self._placeholders(row * width, width)) + ")" for row in range(rows)
            )
            sql = self._sql[rows] = self._head + values + self._tail
        return sql

    def _placeholders(self, before: int, count: int) -> list[str]:
        """``count`` parameter markers, numbered after the first ``before`` on PostgreSQL."""
        if self._raw_cursor:
            return [f"${n}" for n in range(before + 1, before + count + 1)]
        return ["?"] * count

    def _cursor(self, conn: Connection) -> Any:
        driver: Any = conn.connection.driver_connection
        return self._raw_cursor(driver) if self._raw_cursor else driver.cursor()

    def timestamp(self, when: datetime) -> Any:
        return self._received_at(when)

    def row(
        self, item: Incoming, key: str, note_id: str, duplicate_of: str | None, now: Any
    ) -> tuple[Any, ...]:
        """The column values of one notification, in COLUMNS order, ready for the driver.

        Whatever its values, the row can be written: an event the store cannot hold (from the
        path, a header or anywhere else) is left out and the notification is kept quarantined,
        with the reason, instead of failing its batch (the body, headers and address are kept).
        """
        event, status, error = item.event, _DUPLICATE if duplicate_of else _PENDING, None
        # A receipt has nothing to route: handlers run for the original only.
        routed = duplicate_of is not None
        if event is not None and (why := storable.problem(event, EVENT_CHARS)) is not None:
            error = f"event {storable.shown(event)} cannot be stored: {why}"
            event = None
            if duplicate_of is None:
                status, routed = _QUARANTINED, True
        return (
            note_id,
            item.source,
            event,
            now,
            item.client_ip,
            headers_json(item.headers),
            self._body(item.body) if self._body else item.body,
            self._digest(key),
            duplicate_of,
            status,
            self._true if routed else self._false,
            error,
            self._true if item.recovered else self._false,
        )

    def insert(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert ``rows``, skipping stored dedup keys; how many were inserted (-1: unknown)."""
        cursor = self._cursor(conn)
        inserted = 0
        for start in range(0, len(rows), self.chunk):
            chunk = rows[start : start + self.chunk]
            params = tuple(chain.from_iterable(chunk))
            if self._raw_cursor:
                cursor.execute(self._statement(len(chunk)), params, prepare=True)
            else:
                cursor.execute(self._statement(len(chunk)), params)
            count: int = cursor.rowcount
            inserted = -1 if count < 0 or inserted < 0 else inserted + count
        return inserted

    def originals(self, conn: Connection, keys: Sequence[str]) -> dict[str, str]:
        """The stored original's id for each of ``keys`` (dedup keys, hex) that has one."""
        cursor = self._cursor(conn)
        found: dict[str, str] = {}
        for start in range(0, len(keys), self.LOOKUP_CHUNK):
            chunk = keys[start : start + self.LOOKUP_CHUNK]
            markers = ", ".join(self._placeholders(0, len(chunk)))
            cursor.execute(
                self._lookup_head + "(" + markers + ")", [self._digest(key) for key in chunk]
            )
            found.update((bytes(digest).hex(), note_id) for digest, note_id in cursor.fetchall())
        return found


# json.dumps(value, ensure_ascii=False), minus building a JSONEncoder on every call.
_encode_json = json.JSONEncoder(ensure_ascii=False).encode
_encode_json_ascii = json.JSONEncoder().encode


def headers_json(headers: Sequence[tuple[bytes, bytes]] | Mapping[str, str]) -> str:
    """The stored form of a notification's headers: a JSON object (a repeated name: the last).

    Always storable: JSON escapes NUL and the other control characters, header bytes read as
    latin-1 have no surrogate, and headers given as text that hold one are written with JSON's
    ``\\u`` escapes (the same object once read back).
    """
    if isinstance(headers, Mapping):
        text = _encode_json(headers)
        return text if storable.problem(text) is None else _encode_json_ascii(headers)
    return _encode_json(
        {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
    )


_PENDING = str(NoteStatus.PENDING.value)
_DUPLICATE = str(NoteStatus.DUPLICATE.value)
_QUARANTINED = str(NoteStatus.QUARANTINED.value)


def commit_batch(
    conn: Connection, batch: Sequence[tuple[Incoming, str]], inserts: BatchInsert | None = None
) -> list[Receipt]:
    """Insert a batch inside the caller's transaction; repeats become receipts of the original.

    The first notification of each dedup key in the batch is inserted as an original unless the
    key is already stored (the unique index on originals decides, also against other processes).
    Only when the driver reports fewer rows than were sent are the originals looked up.
    """
    if inserts is None:
        inserts = BatchInsert(conn.dialect)
    now = inserts.timestamp(utcnow())
    keys = [item.dedup_key or dedup_key(item.source, item.body) for item, _ in batch]
    originals: dict[str, str] = {}
    fresh: list[tuple[Any, ...]] = []
    for (item, note_id), key in zip(batch, keys, strict=True):
        if key not in originals:
            originals[key] = note_id
            fresh.append(inserts.row(item, key, note_id, None, now))
    if inserts.insert(conn, fresh) != len(fresh):
        # Some keys were stored before (a retried delivery), or by another process just now
        # (PostgreSQL, several workers): the stored original wins, ours becomes a receipt.
        originals.update(inserts.originals(conn, list(originals)))
    receipts: list[Receipt] = []
    repeats: list[tuple[Any, ...]] = []
    for (item, note_id), key in zip(batch, keys, strict=True):
        original = originals[key]
        if original == note_id:
            receipts.append(Receipt(note_id, None))
        else:
            repeats.append(inserts.row(item, key, note_id, original, now))
            receipts.append(Receipt(note_id, original))
    if repeats:
        inserts.insert(conn, repeats)
    return receipts
