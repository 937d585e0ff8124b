"""The notifications row as the writers insert it, in SQLAlchemy Core alone: its column types
(``UTCDateTime``, ``Digest``), its statuses and ``NOTE_ROW``, the columns ``batch`` binds.

Apart from ``tables`` (the SQLModel models every other part of the store reads) so that the writer
process, which only inserts notifications, does not import SQLModel, pydantic and SQLAlchemy's ORM:
they were 15 MiB of its 54 MiB resident after its imports. ``tables`` uses these types, and
``tests/unit/store/test_rows.py`` checks that ``NOTE_ROW`` matches its notifications table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, DateTime, LargeBinary, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import column, table
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class NoteStatus(StrEnum):
    PENDING = "pending"  # stored, handlers not finished yet
    DONE = "done"  # every handler succeeded
    FAILED = "failed"  # a handler failed and will be retried
    DEAD = "dead"  # a handler used up its attempts
    QUARANTINED = "quarantined"  # body unreadable, or no handler for its event: kept for review
    DUPLICATE = "duplicate"  # a receipt of a repeat; handlers ran for the original


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every dialect; SQLite would otherwise hand back naive ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Digest(TypeDecorator[str]):
    """A sha256 digest: lowercase hex in Python and the API, its 32 raw bytes in the table.

    Half the bytes in every row and in the unique index that every insert probes and extends.
    """

    impl = LargeBinary(32)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        raw = bytes.fromhex(value)
        if len(raw) != 32:
            raise ValueError("a dedup key is the 64 hex digits of a sha256 digest")
        return raw

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else bytes(value).hex()


# The longest event id a notification's row holds (tables.StoredNotification.event).
EVENT_CHARS = 120

# The notifications table's name and the columns a writer inserts, with their types: what
# batch.BatchInsert needs of tables.NOTES (names, bind processors, the event's length).
NOTE_ROW = table(
    "notifications",
    column("id", String(26)),
    column("source", String(64)),
    column("event", String(EVENT_CHARS)),
    column("received_at", UTCDateTime()),
    column("client_ip", String(64)),
    column("headers", Text()),
    column("body", LargeBinary()),
    column("dedup_key", Digest()),
    column("duplicate_of", String(26)),
    column("status", String(16)),
    column("routed", Boolean()),
    column("error", Text()),
    column("recovered", Boolean()),
)
