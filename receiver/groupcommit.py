"""Group commit: one writer thread stores everything waiting in one transaction and one fsync.

Concurrent requests hand their notification to the writer, which commits what has queued up
while the previous commit was on disk, then wakes every waiting request at once. A request is
answered 200 only after the commit that holds its row has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from itertools import chain
from typing import Any, NamedTuple

from sqlalchemy import Engine
from sqlalchemy.engine import Connection, Dialect

from receiver.errors import StoreUnavailable
from receiver.ids import new_id
from receiver.models import NOTES, NoteStatus, utcnow
from receiver.sources import dedup_key

log = logging.getLogger("receiver.store")


class Incoming(NamedTuple):
    """A notification that passed every check and is waiting for its commit.

    A named tuple, not a frozen dataclass: one is made for every request on the event loop, and
    the frozen dataclass's ``__init__`` (``object.__setattr__`` per field) took 1.1 us against
    0.45 us for this (with keywords; 0.25 positional), with the same fields, constructor and
    immutability.
    """

    source: str
    event: str | None
    client_ip: str
    # As received (name and value bytes, credentials already removed), or already decoded.
    # Ingest hands the raw pairs over: decoding them is the writer's work, not the event loop's.
    headers: Sequence[tuple[bytes, bytes]] | Mapping[str, str]
    body: bytes
    # sources.dedup_key (64 hex digits, stored as the 32 bytes they spell); None: the writer
    # computes it, off the event loop.
    dedup_key: str | None = None
    recovered: bool = False


class Receipt(NamedTuple):
    """Where a notification was stored; a named tuple for the same reason as ``Incoming``."""

    id: str
    duplicate_of: str | None

    @property
    def duplicate(self) -> bool:
        return self.duplicate_of is not None


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

    COLUMNS = (
        "id",
        "source",
        "event",
        "received_at",
        "client_ip",
        "headers",
        "body",
        "dedup_key",
        "duplicate_of",
        "status",
        "routed",
        "error",
        "recovered",
    )

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
        self._head = f"INSERT INTO {NOTES.name} ({', '.join(self.COLUMNS)}) VALUES "  # noqa: S608
        self._tail = " ON CONFLICT (dedup_key) WHERE duplicate_of IS NULL DO NOTHING"
        self._sql: dict[int, str] = {}
        self._lookup_head = (
            f"SELECT dedup_key, id FROM {NOTES.name} "  # noqa: S608 (our names; values bound)
            "WHERE duplicate_of IS NULL AND dedup_key IN "
        )
        # Bind processors, applied once here or once per batch instead of once per value.
        received_at = NOTES.c.received_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._received_at = received_at or (lambda value: value)
        boolean = NOTES.c.routed.type.dialect_impl(dialect).bind_processor(dialect)
        self._true = boolean(True) if boolean else True
        self._false = boolean(False) if boolean else False
        # The driver's binary wrapper, if the dialect has one (sqlite3.Binary, psycopg.Binary).
        self._body = NOTES.c.body.type.dialect_impl(dialect).bind_processor(dialect)
        # Hex in, 32 raw bytes out (models.Digest), then the driver's binary wrapper if any.
        digest = NOTES.c.dedup_key.type.dialect_impl(dialect).bind_processor(dialect)
        assert digest is not None
        self._digest = digest
        for name in self.COLUMNS:
            if name not in ("received_at", "routed", "recovered", "body", "dedup_key"):
                column_type = NOTES.c[name].type
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
        """The column values of one notification, in COLUMNS order, ready for the driver."""
        return (
            note_id,
            item.source,
            item.event,
            now,
            item.client_ip,
            headers_json(item.headers),
            self._body(item.body) if self._body else item.body,
            self._digest(key),
            duplicate_of,
            _DUPLICATE if duplicate_of else _PENDING,
            # A receipt has nothing to route: handlers run for the original only.
            self._false if duplicate_of is None else self._true,
            None,
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


def headers_json(headers: Sequence[tuple[bytes, bytes]] | Mapping[str, str]) -> str:
    """The stored form of a notification's headers: a JSON object (a repeated name: the last)."""
    if isinstance(headers, Mapping):
        return _encode_json(headers)
    return _encode_json(
        {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
    )


_PENDING = str(NoteStatus.PENDING.value)
_DUPLICATE = str(NoteStatus.DUPLICATE.value)


class CommitHealth:
    """When ingest's commits last succeeded and failed, for readiness."""

    def __init__(self) -> None:
        # monotonic times of the last commit that succeeded and the last that failed (0: never)
        self.last_success = 0.0
        self.last_failure = 0.0
        self.started = True  # able to take notifications (a writer process says when it is)

    def failing(self, within: float) -> bool:
        """The latest commit failed, less than ``within`` seconds ago.

        Forgotten after ``within`` so that a load balancer that stopped sending traffic on our
        503 sends some again: the next real commit is the probe, and sets it anew if it fails.
        """
        failed = self.last_failure > self.last_success
        return failed and time.monotonic() - self.last_failure < within


class BatchWriter:
    """Commits batches on one held connection; SQLite's WAL is checkpointed beside it.

    Used by one thread at a time: the group-commit thread, or the writer process's main thread.
    """

    IDLE_SECONDS = 1.0  # hold the connection across batches while busy; re-check it after this
    CHECKPOINT_SECONDS = 0.1  # SQLite: background WAL checkpoints at most this often
    AUTOCHECKPOINT_PAGES = 10_000  # SQLite: the writer's own checkpoints, a safety net only
    CATCH_UP_PASSES = 4  # SQLite: background checkpoint passes per round, at most
    TAIL_FRAMES = 100  # SQLite: few enough new frames for the writer to copy them itself
    REWIND_FRAMES = 4_000  # SQLite: the WAL is rewound once it is this long (16 MiB)
    CACHE_KIB = 8 * 1024  # SQLite: the writer connection's page cache (the default is 2 MiB)
    LOCK_POLL_SECONDS = 0.001  # SQLite: how often the writer asks again for a lock held elsewhere
    LOCK_WAIT_SECONDS = 30.0  # SQLite: and for how long at most (the engine's busy timeout)

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._inserts = BatchInsert(engine.dialect)
        self._sqlite = engine.dialect.name == "sqlite"
        self._conn: Connection | None = None
        self._last_used = 0.0
        self._committed = threading.Event()
        self._closing = threading.Event()
        self._tail_due = threading.Event()  # a background checkpoint copied all it saw
        self._checkpointer: threading.Thread | None = None
        if self._sqlite and engine.url.database not in (None, "", ":memory:"):
            self._checkpointer = threading.Thread(
                target=self._checkpoint_run, name="wal-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def commit(self, batch: Sequence[tuple[Incoming, str]]) -> list[Receipt] | StoreUnavailable:
        """Store ``batch`` in one transaction: a receipt per notification, or why none was stored."""
        # The connection is kept while busy (no pool round trip per batch) and given back when
        # idle, so that the next checkout pings it (pool_pre_ping) before use.
        try:
            if self._conn is not None and time.monotonic() - self._last_used > self.IDLE_SECONDS:
                self._conn.close()
                self._conn = None
            if self._conn is None:
                self._conn = self._connect()
            receipts = self._transaction(self._conn, batch)
            self._last_used = time.monotonic()
            self._committed.set()
            return receipts
        except Exception as error:  # any failure: nobody in this batch is acknowledged
            log.error(
                "store commit failed for %d notifications: %s", len(batch), type(error).__name__
            )
            if self._conn is not None:
                # It may be broken: the next batch starts on a fresh connection.
                with contextlib.suppress(Exception):
                    self._conn.invalidate()
                    self._conn.close()
                self._conn = None
            return StoreUnavailable(f"store commit failed: {type(error).__name__}")

    def _transaction(
        self, conn: Connection, batch: Sequence[tuple[Incoming, str]]
    ) -> list[Receipt]:
        """``batch`` in one transaction, begun and committed on the driver's connection.

        SQLAlchemy's transaction around the statements (its begin hook, commit and bookkeeping)
        cost about 30 us per batch on SQLite, paid while the whole batch of requests waits.
        """
        driver: Any = conn.connection.driver_connection
        if self._sqlite:
            self._take_write_lock(driver)
        try:
            receipts = commit_batch(conn, batch, self._inserts)
            driver.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # the caller drops this connection anyway
                driver.rollback()
            raise
        return receipts

    def _take_write_lock(self, driver: sqlite3.Connection) -> None:
        """SQLite: BEGIN IMMEDIATE, asked again every millisecond while another connection writes.

        SQLite's own busy handler sleeps 1, 2, 5, 10 and on up to 100 ms between tries. Against
        the in-process handler worker, whose short write transactions follow one another, the
        writer kept waking up to a lock taken again, and a Portal burst's acknowledgements
        waited up to 650 ms (locust p99 380-530 ms, against 29 ms without the worker).
        """
        deadline = time.monotonic() + self.LOCK_WAIT_SECONDS
        while True:
            try:
                driver.execute("BEGIN IMMEDIATE")  # what the engine's begin hook issues for writes
                return
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(self.LOCK_POLL_SECONDS)

    def finish_checkpoint(self) -> None:
        """SQLite: copy what the last background checkpoint missed, so the WAL can start over.

        Called by the writer between batches, after their answers are out. SQLite rewinds the
        WAL only if a write transaction begins when every frame is already in the database, and
        under load the writer always committed while the background checkpoint ran: the WAL then
        grew to wal_autocheckpoint pages, where commits stalled for ~50 ms (the p99 of a long
        burst). Done here, by the writer itself, no commit can come in between: it copies the
        few frames committed during the background run, and the next transaction rewinds.
        """
        if not self._tail_due.is_set() or self._conn is None:
            return
        self._tail_due.clear()
        try:
            driver: Any = self._conn.connection.driver_connection
            driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as error:  # the background checkpoints go on regardless
            log.warning("WAL checkpoint after a batch failed: %s", type(error).__name__)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self._closing.set()
        self._committed.set()  # wakes the checkpointer, which then sees it is closing
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=30)

    def _connect(self) -> Connection:
        conn = self._engine.connect()
        if self._sqlite:
            # A multi-row INSERT keeps a statement journal (to undo itself half-way); past 64 KiB
            # SQLite spills it to a temporary file, created and deleted on every commit. In
            # memory it costs nothing. Crash safety is the WAL's job, not this journal's.
            driver: Any = conn.connection.driver_connection
            driver.execute("PRAGMA temp_store=MEMORY")
            # Every insert reaches a random leaf of the dedup index; SQLite's default 2 MiB page
            # cache makes most of those a read from the file once the table has grown.
            driver.execute(f"PRAGMA cache_size=-{self.CACHE_KIB}")
            # The checkpointer thread keeps the WAL short; the commit path checkpoints only if
            # it falls far behind (SQLite's default would, every 1,000 pages, inside a COMMIT
            # that a whole batch of requests waits for).
            driver.execute(f"PRAGMA wal_autocheckpoint={self.AUTOCHECKPOINT_PAGES}")
            # The writer waits for the write lock itself (_take_write_lock), not in SQLite.
            driver.execute("PRAGMA busy_timeout=0")
        return conn

    def _checkpoint_run(self) -> None:
        """SQLite: copy committed WAL frames into the database file beside the writer.

        Left to itself, SQLite checkpoints inside the COMMIT that pushes the WAL past 1000 pages,
        and every request waiting for the next batch waits for that copy and its fsync too. A
        PASSIVE checkpoint here, every CHECKPOINT_SECONDS while commits happen, does that work on
        another thread (and core: it holds no GIL while it runs) and never blocks the writer.
        Once the WAL is REWIND_FRAMES long, the writer copies the last few frames itself
        (``finish_checkpoint``), so that the WAL starts over.
        """
        raw: Any = None
        try:
            while not self._closing.is_set():
                if not self._committed.wait(timeout=1.0):
                    continue
                self._committed.clear()
                if self._closing.wait(self.CHECKPOINT_SECONDS):
                    return
                try:
                    if raw is None:
                        raw = self._engine.raw_connection()
                    if self._catch_up(raw.driver_connection):
                        self._tail_due.set()
                except Exception as error:  # the writer's own checkpoints still happen
                    log.warning("background WAL checkpoint failed: %s", type(error).__name__)
                    if raw is not None:
                        with contextlib.suppress(Exception):
                            raw.invalidate()
                        raw = None
        finally:
            if raw is not None:
                with contextlib.suppress(Exception):
                    raw.close()

    def _catch_up(self, driver: Any) -> bool:
        """Checkpoint until little is left: each pass copies what was committed during the one
        before, so the writer's own pass (``finish_checkpoint``) has a commit or two to copy, not
        a whole background pass's worth. True if the last pass copied all it saw."""
        seen = 0
        for _ in range(self.CATCH_UP_PASSES):
            [(busy, frames, copied)] = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if busy or frames < self.REWIND_FRAMES or copied != frames:
                return False
            if frames - seen <= self.TAIL_FRAMES:
                break
            seen = frames
        return True


class GroupCommitter(CommitHealth):
    """One writer thread; everything queued while it commits goes into its next transaction.

    The writer for in-process use (tests that inject faults into the engine, ``:memory:``
    databases); ``receiver serve`` commits in a writer process (``receiver.writerprocess``).
    """

    _STOP = object()

    def __init__(self, engine: Engine, max_batch: int = 512, max_wait_ms: float = 0.0) -> None:
        super().__init__()
        self._engine = engine
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, item: Incoming, expires_at: float = 0.0) -> asyncio.Future[Receipt]:
        """Queue ``item`` for the next commit; ``expires_at`` is unused: the writer thread sees
        directly whether the request has given up (its future is done)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        self._queue.put((item, future, loop))
        return future

    def close(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join(timeout=30)

    def _collect(self, first: Any) -> tuple[list[Any], bool]:
        batch, stopping = [first], False
        get = self._queue.get_nowait
        deadline = time.monotonic() + self._max_wait if self._max_wait else None
        while len(batch) < self._max_batch:
            try:
                if deadline is None:
                    item = get()
                else:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is self._STOP:
                stopping = True
                break
            batch.append(item)
        return batch, stopping

    def _run(self) -> None:
        writer = BatchWriter(self._engine)
        try:
            while True:
                first = self._queue.get()
                if first is self._STOP:
                    return
                batch, stopping = self._collect(first)
                # A request that already gave up (ack timeout, answered 503) is not stored behind
                # its back: the sender will retry it. Racy by nature; a late give-up is a stored
                # receipt.
                batch = [entry for entry in batch if not entry[1].done()]
                if not batch:
                    if stopping:
                        return
                    continue
                result = writer.commit([(entry[0], new_id()) for entry in batch])
                outcome: list[Any]
                if isinstance(result, StoreUnavailable):
                    self.last_failure = time.monotonic()
                    outcome = [result] * len(batch)
                else:
                    self.last_success = time.monotonic()
                    outcome = result
                by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = defaultdict(list)
                for (_, future, loop), receipt in zip(batch, outcome, strict=True):
                    by_loop[loop].append((future, receipt))
                for loop, pairs in by_loop.items():
                    # RuntimeError: that loop has closed, so nobody is waiting any more.
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(_settle, pairs)
                writer.finish_checkpoint()
                if stopping:
                    return
        finally:
            writer.close()


def _settle(pairs: list[tuple[asyncio.Future[Receipt], Any]]) -> None:
    for future, result in pairs:
        if future.done():  # the request gave up waiting (ack timeout) and answered 503
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


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
