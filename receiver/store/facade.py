"""The store facade: SQLite (WAL, synchronous=FULL) or PostgreSQL, one code path for both.

``Store.append`` is the ingest's only write; it goes through a ``Committer``
(``receiver.store.committer``): a writer process (``receiver.store.process``) or a writer thread
(``receiver.store.thread``). The rest is the schema, its durability check (``engine``), and reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from receiver.config import Settings
from receiver.deadlines import Deadlines
from receiver.errors import StoreUnavailable
from receiver.ids import id_floor, new_id
from receiver.store import migrate
from receiver.store.batch import commit_batch
from receiver.store.committer import Committer, Incoming, Receipt
from receiver.store.engine import (
    RELAXED,
    check_durability,
    check_reachable,
    in_memory,
    make_engine,
    safe_url,
)
from receiver.store.process import ProcessCommitter
from receiver.store.schema import RECEIVER_SCHEMA
from receiver.store.tables import ATTEMPTS, JOBS, NOTES
from receiver.store.thread import ThreadCommitter
from receiver.store.writer import DEFAULT_TIMEOUT_SECONDS

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


def _give_up(committer: Committer, deadline: float) -> Callable[[asyncio.Future[Any]], None]:
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
        origin: str = "receiver.yaml",
    ) -> None:
        self.url = url
        self.origin = origin  # the settings file that named it, for errors
        self.engine = make_engine(url, pool_size=pool_size, origin=origin)
        self.dialect = self.engine.dialect.name
        self._committer: Committer | None = None
        self._ack_deadlines: dict[float, Deadlines[asyncio.Future[Any]]] = {}
        self._max_batch = max_batch
        self._max_wait_ms = max_wait_ms
        self._commit_timeout = commit_timeout_seconds
        # A writer process cannot see this process's in-memory database.
        self._writer = "thread" if in_memory(self.engine) else writer

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
            origin=settings.origin,
        )

    def check_reachable(self) -> None:
        """Connect once: one line (ConfigError or StoreUnavailable) saying why not, if not."""
        check_reachable(self.engine, self.origin)

    def upgrade_schema(self) -> migrate.Upgraded:
        """Bring the tables to this release's revision (``receiver db upgrade``). Needs DDL
        rights, which the serving commands never use."""
        upgraded = migrate.upgrade(self.engine, RECEIVER_SCHEMA)
        self.check_durability()
        return upgraded

    def check_schema(self, command: str | None = None) -> None:
        """Refuse (SchemaNotCurrent, one line naming ``command``) tables that are not at this
        release's revision, and a store that would not commit durably."""
        migrate.check(self.engine, RECEIVER_SCHEMA, command)
        self.check_durability()

    @property
    def safe_url(self) -> str:
        return safe_url(self.engine)

    def check_durability(self) -> None:
        """Refuse to run on a store that would acknowledge what it has not flushed."""
        check_durability(self.engine)

    # --- ingest ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the group commit; with a writer process, from the event loop that will use it."""
        if self._committer is not None:
            return
        if self._writer == "process":
            url = self.engine.url.render_as_string(hide_password=False)
            self._committer = ProcessCommitter(
                url, self._max_batch, self._max_wait_ms, self._commit_timeout
            )
        else:
            self._committer = ThreadCommitter(
                self.engine, self._max_batch, self._max_wait_ms, self._commit_timeout
            )

    async def until_started(self, within: float) -> bool:
        """Wait until the group commit can take notifications (a writer process has said hello:
        its interpreter, imports and connection take about a second, 1.03 s for the first request
        of a fresh `serve` on a busy machine when nobody waited), at most ``within`` seconds."""
        if self._committer is None:
            self.start()
        committer = self._committer
        assert committer is not None
        deadline = time.monotonic() + within
        # Polled: ``started`` is a committer's plain flag (a thread committer's is always set).
        while not committer.started and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return committer.started

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id, when the group commit runs in one (for operators and tests)."""
        return self._committer.pid if self._committer is not None else None

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

    @contextlib.contextmanager
    def relaxed_writes(self) -> Iterator[Connection]:
        """A write transaction whose commit returns before it is on disk: SQLite's
        ``synchronous=NORMAL`` (WAL), PostgreSQL's ``synchronous_commit = off``.

        For the handler worker's own bookkeeping (plans, claims, outcomes, results), where
        at-least-once is the promise: a power loss can take back only the last such commits,
        never an earlier one without the later ones (both logs are replayed in order, up to a
        point), so what it takes back is a plan, a claim or an outcome, and the job is planned,
        claimed or run again, as after a crash. Any durable commit (ingest's, every 200) flushes
        the log up to itself, these included. Each of them otherwise waited for its own fsync:
        three per round of claimed jobs, about 4.4 ms each on this machine's disk.
        """
        with self.engine.connect().execution_options(**{RELAXED: True}) as conn, conn.begin():
            yield conn

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

    def commits_failing(self, failure_memory: float = 5.0) -> bool:
        """Ingest's latest commit failed within the last seconds (a writer still starting is
        not failing): what the alerts call the store refusing writes."""
        committer = self._committer
        return committer is not None and committer.started and committer.failing(failure_memory)

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

    def notes_where_ids(self, note_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The notifications with these ids that exist (any order)."""
        with self.reading() as conn:
            rows = conn.execute(select(NOTES).where(NOTES.c.id.in_(list(note_ids)))).mappings()
            return [dict(row) for row in rows]

    def jobs_of(self, note_id: str) -> list[dict[str, Any]]:
        with self.reading() as conn:
            rows = conn.execute(
                select(JOBS).where(JOBS.c.notification_id == note_id).order_by(JOBS.c.id)
            ).mappings()
            return [dict(row) for row in rows]

    def attempts_of(self, note_id: str) -> list[dict[str, Any]]:
        """Every recorded attempt of the notification's jobs, by job then attempt number: when,
        the outcome, and for a failure the error's type, message and traceback (for
        ``receiver inbox show`` and the console)."""
        with self.reading() as conn:
            rows = conn.execute(
                select(ATTEMPTS)
                .where(ATTEMPTS.c.notification_id == note_id)
                .order_by(ATTEMPTS.c.job_id, ATTEMPTS.c.attempt, ATTEMPTS.c.id)
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
