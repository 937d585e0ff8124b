"""The durable store: SQLite (WAL, synchronous=FULL) or PostgreSQL, one code path for both.

``Store.append`` is the ingest's only write; it goes through the group commit, in a thread
(``receiver.groupcommit``) or a writer process (``receiver.writerprocess``). The rest is the
engine, the schema and its durability check, and reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, and_, create_engine, event, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from receiver.batchinsert import Incoming as Incoming
from receiver.batchinsert import Receipt as Receipt
from receiver.batchinsert import commit_batch
from receiver.batchwriter import DEFAULT_TIMEOUT_SECONDS
from receiver.config import Settings
from receiver.deadlines import Deadlines
from receiver.errors import ConfigError, StoreUnavailable
from receiver.groupcommit import CommitHealth, GroupCommitter
from receiver.ids import id_floor, new_id
from receiver.models import JOBS as JOBS
from receiver.models import NOTES as NOTES
from receiver.models import RECEIVER_TABLES as RECEIVER_TABLES
from receiver.models import RESULTS as RESULTS
from receiver.writerprocess import WriterProcess

log = logging.getLogger("receiver.store")


# How much earlier than its received_at a notification's id can be: the id is made when the
# request is handed to the writer, received_at when its batch commits (the ack deadline bounds the
# wait). Generous, so that a clock step in between does not hide a notification from a date query.
ID_LEAD = timedelta(hours=1)


def received_since(when: datetime) -> ColumnElement[bool]:
    """Notifications received at ``when`` or later, found through the primary key.

    There is no index on received_at (every insert would write it): the id range narrows the
    scan to what came from ``ID_LEAD`` before, and received_at decides exactly.
    """
    return and_(NOTES.c.id >= id_floor(when - ID_LEAD), NOTES.c.received_at >= when)


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here; SQLAlchemy alone would pick psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _make_sqlite_durable(engine)
        return engine
    if url.startswith("postgresql"):
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_timeout=5,
            connect_args={"connect_timeout": 5},
        )
    raise ConfigError(f"receiver.yaml: database_url: unsupported database {url.split(':')[0]!r}")


def _make_sqlite_durable(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (IMMEDIATE for writes), instead of pysqlite's deferred one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred read-then-write can fail with SQLITE_BUSY_SNAPSHOT whatever the busy timeout;
        # writers take the lock up front. Readers ask for a plain BEGIN.
        if connection.get_execution_options().get("sqlite_readonly"):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _give_up(committer: CommitHealth, deadline: float) -> Callable[[asyncio.Future[Any]], None]:
    def give_up(future: asyncio.Future[Any]) -> None:
        if not future.done():
            # A commit stuck past the deadline (a lock held elsewhere, a stalled disk) is a
            # failure too, for readiness, until a commit goes through.
            committer.last_failure = time.monotonic()
            future.set_exception(StoreUnavailable(f"store did not commit within {deadline} s"))

    return give_up


@dataclass(frozen=True, slots=True)
class NoteFilter:
    source: str | None = None
    event: str | None = None
    status: str | None = None
    since: datetime | None = None
    limit: int | None = None


class Store:
    """The one store object a process holds: engine, schema, group commit, and reads."""

    def __init__(
        self,
        url: str,
        *,
        max_batch: int = 512,
        max_wait_ms: float = 0.0,
        pool_size: int = 8,
        writer: Literal["thread", "process"] = "thread",
        commit_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        self._committer: GroupCommitter | WriterProcess | None = None
        self._ack_deadlines: dict[float, Deadlines[asyncio.Future[Any]]] = {}
        self._max_batch = max_batch
        self._max_wait_ms = max_wait_ms
        self._commit_timeout = commit_timeout_seconds
        in_memory = self.dialect == "sqlite" and self.engine.url.database in (None, "", ":memory:")
        # A writer process cannot see this process's in-memory database.
        self._writer = "thread" if in_memory else writer

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The store ``receiver.yaml`` describes, group commit set up as configured."""
        return cls(
            settings.database_url,
            max_batch=settings.group_commit.max_batch,
            max_wait_ms=settings.group_commit.max_wait_ms,
            writer=settings.group_commit.writer,
            # Nobody waits for a commit past the ack deadline: the writer gives up a second later.
            commit_timeout_seconds=settings.ack_timeout_seconds + 1.0,
        )

    def create_schema(self) -> None:
        try:
            # Only our tables: other components (the dispatcher) keep theirs in their own store.
            SQLModel.metadata.create_all(self.engine, tables=RECEIVER_TABLES)
        except SQLAlchemyError as error:
            raise StoreUnavailable(
                f"cannot reach the store at {self.safe_url}: {error.__class__.__name__}"
            ) from error
        self.check_durability()

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def check_durability(self) -> None:
        """Refuse to run on a store that would acknowledge what it has not flushed."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
                # A file database must be in WAL with FULL (2) sync; ':memory:' is for tests only.
                if self.engine.url.database not in (None, "", ":memory:") and (
                    str(mode).lower() != "wal" or sync != 2
                ):
                    raise ConfigError(f"{self.safe_url}: SQLite is not WAL + synchronous=FULL")
            elif self.dialect == "postgresql":
                for setting in ("fsync", "synchronous_commit"):
                    value = conn.exec_driver_sql(f"SHOW {setting}").scalar()
                    if str(value).lower() not in ("on", "remote_write", "remote_apply"):
                        raise ConfigError(
                            f"{self.safe_url}: PostgreSQL {setting} is {value}; acknowledged "
                            "notifications could be lost. Turn it on."
                        )

    # --- ingest ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the group commit; with a writer process, from the event loop that will use it."""
        if self._committer is not None:
            return
        if self._writer == "process":
            url = self.engine.url.render_as_string(hide_password=False)
            self._committer = WriterProcess(
                url, self._max_batch, self._max_wait_ms, self._commit_timeout
            )
        else:
            self._committer = GroupCommitter(
                self.engine, self._max_batch, self._max_wait_ms, self._commit_timeout
            )

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id, when the group commit runs in one (for operators and tests)."""
        return self._committer.pid if isinstance(self._committer, WriterProcess) else None

    async def append(self, item: Incoming, deadline: float | None = None) -> Receipt:
        """Durably store ``item``; raise StoreUnavailable if that cannot be promised in time."""
        if self._committer is None:
            self.start()
        assert self._committer is not None
        if deadline is None:
            return await self._committer.submit(item)
        deadlines = self._ack_deadlines.get(deadline)
        if deadlines is None:
            deadlines = Deadlines(deadline, _give_up(self._committer, deadline))
            self._ack_deadlines[deadline] = deadlines
        # A request that gave up is skipped by the writer (not stored), if it has not begun.
        future = self._committer.submit(item, time.monotonic() + deadline)
        token = deadlines.add(future)
        try:
            return await future
        except StoreUnavailable as error:
            # The future keeps this exception for as long as the committer holds the future (a
            # stalled writer: until it answers), and its traceback would keep every frame it
            # went through, and the body in them: the caller gets a fresh one instead.
            error.__traceback__ = None
            raise type(error)(*error.args) from None
        finally:
            deadlines.discard(token)

    def append_now(self, items: Sequence[Incoming]) -> list[Receipt]:
        """Synchronous batch append, for recovery and tools that are not serving requests."""
        try:
            with self.engine.begin() as conn:
                return commit_batch(conn, [(item, new_id()) for item in items])
        # The batch's statements run on the driver's connection: its errors come unwrapped.
        except (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as error:
            raise StoreUnavailable(f"store commit failed: {error.__class__.__name__}") from error

    def close(self) -> None:
        if self._committer is not None:
            self._committer.close()
            self._committer = None
            self._ack_deadlines.clear()  # they name the committer that is gone
        self.engine.dispose()

    # --- reads ----------------------------------------------------------------------------

    def reading(self) -> Connection:
        return self.engine.connect().execution_options(sqlite_readonly=True)

    def ready(self, failure_memory: float = 5.0) -> bool:
        """The store answers, and ingest's latest commit did not fail in the last seconds.

        A reachable store can still refuse writes (a SQLite file locked by another process, a
        full disk): the group commit's own outcome says so. A writer process that is still
        starting (or starting again) is not ready either.
        """
        committer = self._committer
        if committer is not None and (not committer.started or committer.failing(failure_memory)):
            return False
        try:
            with self.reading() as conn:
                conn.execute(select(1)).scalar()
            return True
        except SQLAlchemyError:
            return False

    def notes(self, where: NoteFilter) -> Iterator[dict[str, Any]]:
        """Matching notifications oldest first, streamed so a big inbox never sits in memory."""
        # Id order is arrival order (ids are time-ordered), and the primary key gives it for free.
        query = select(NOTES).order_by(NOTES.c.id)
        if where.source:
            query = query.where(NOTES.c.source == where.source)
        if where.event:
            query = query.where(NOTES.c.event == where.event)
        if where.status:
            query = query.where(NOTES.c.status == where.status)
        if where.since:
            query = query.where(received_since(where.since))
        if where.limit is not None:
            query = query.limit(where.limit)
        with self.reading() as conn:
            result = conn.execution_options(stream_results=True, yield_per=500).execute(query)
            for row in result.mappings():
                yield dict(row)

    def note(self, note_id: str) -> dict[str, Any] | None:
        with self.reading() as conn:
            row = conn.execute(select(NOTES).where(NOTES.c.id == note_id)).mappings().first()
            return dict(row) if row else None

    def jobs_of(self, note_id: str) -> list[dict[str, Any]]:
        with self.reading() as conn:
            rows = conn.execute(
                select(JOBS).where(JOBS.c.notification_id == note_id).order_by(JOBS.c.id)
            ).mappings()
            return [dict(row) for row in rows]

    def known_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of these dedup keys already have a stored original."""
        found: set[str] = set()
        with self.reading() as conn:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                found.update(
                    conn.execute(
                        select(NOTES.c.dedup_key).where(
                            NOTES.c.dedup_key.in_(chunk), NOTES.c.duplicate_of.is_(None)
                        )
                    ).scalars()
                )
        return found

    def count_notes(self) -> int:
        with self.reading() as conn:
            return int(conn.execute(select(func.count()).select_from(NOTES)).scalar_one())
