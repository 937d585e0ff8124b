"""The writer's side of the group commit: one held connection, one transaction per batch.

Used by one thread at a time: the thread committer's writer thread (``receiver.store.thread``) or
the writer process's main thread (``receiver.store.process.child``).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from receiver import logs, storable
from receiver.errors import RefusedByStore, StoreUnavailable
from receiver.store.batch import BatchInsert, commit_batch
from receiver.store.committer import Incoming, Receipt
from receiver.store.faults import store_down

log = logging.getLogger("receiver.store")

# A batch carries at most this many bytes of bodies (one body, however large, at least). A batch
# of 512 notifications of 1 MiB, as a stalled writer gathered them, made half a gigabyte of rows,
# and as much again in the driver's parameters; 8 MiB is still hundreds of Portal notifications.
MAX_BATCH_BYTES = 8 * 1024 * 1024
# How long a lock or a statement may hold a batch: the default ack deadline (2 s), and a second.
DEFAULT_TIMEOUT_SECONDS = 3.0


class BatchWriter:
    """Commits batches on one held connection; SQLite's WAL is checkpointed beside it.

    Used by one thread at a time: the thread committer's, or the writer process's main thread.
    """

    IDLE_SECONDS = 1.0  # hold the connection across batches while busy; re-check it after this
    CHECKPOINT_SECONDS = 0.1  # SQLite: background WAL checkpoints at most this often
    AUTOCHECKPOINT_PAGES = 10_000  # SQLite: the writer's own checkpoints, a safety net only
    CATCH_UP_PASSES = 4  # SQLite: background checkpoint passes per round, at most
    TAIL_FRAMES = 100  # SQLite: few enough new frames for the writer to copy them itself
    REWIND_FRAMES = 4_000  # SQLite: the WAL is rewound once it is this long (16 MiB)
    CACHE_KIB = 8 * 1024  # SQLite: the writer connection's page cache (the default is 2 MiB)
    LOCK_POLL_SECONDS = 0.001  # SQLite: how often the writer asks again for a lock held elsewhere

    def __init__(self, engine: Engine, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        """``timeout_seconds``: how long a lock held elsewhere (both stores) or a statement
        (PostgreSQL) may keep a batch waiting before it fails: a little longer than the ack
        deadline, after which nobody waits for it any more."""
        self._engine = engine
        self._timeout = timeout_seconds
        self._inserts = BatchInsert(engine.dialect)
        self._sqlite = engine.dialect.name == "sqlite"
        self._conn: Connection | None = None
        self._outage = logs.OutageLog(log, "store commits fail")
        self._last_used = 0.0
        # Transactions begun, whole batches and the halves a refused row splits them into.
        self.transactions = 0
        # The last batch that was stored: its notifications and how long its commit took
        # (isolating a refused row included), for receiver_store_commit_seconds and _batch_size.
        self.last_batch = 0
        self.last_commit_seconds = 0.0
        self._committed = threading.Event()
        self._closing = threading.Event()
        self._tail_due = threading.Event()  # a background checkpoint copied all it saw
        self._checkpointer: threading.Thread | None = None
        if self._sqlite and engine.url.database not in (None, "", ":memory:"):
            self._checkpointer = threading.Thread(
                target=self._checkpoint_run, name="wal-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def commit(
        self, batch: Sequence[tuple[Incoming, str]]
    ) -> list[Receipt | RefusedByStore] | StoreUnavailable:
        """Store ``batch``: a receipt per notification, or why none was stored (the store failed).

        A notification the store refuses for its own values (``faults``: not the store being
        down) gets a ``RefusedByStore`` in its place, and the others are stored all the same: the
        batch is committed again in halves, and halves of halves, until only the culprits are
        left out (a batch of 190 with one culprit: 16 transactions, not 190).
        """
        # The connection is kept while busy (no pool round trip per batch) and given back when
        # idle, so that the next checkout pings it (pool_pre_ping) before use.
        try:
            if self._conn is not None and time.monotonic() - self._last_used > self.IDLE_SECONDS:
                self._give_back()
            if self._conn is None:
                self._conn = self._connect()
            started = time.perf_counter()
            outcomes = self._isolating(self._conn, batch)
            self.last_commit_seconds = time.perf_counter() - started
            self.last_batch = len(batch)
            self._outage.up()
            self._last_used = time.monotonic()
            self._committed.set()
            return outcomes
        except Exception as error:  # the store failed: nobody in this batch is acknowledged
            # Said once until a commit succeeds again, however many batches fail meanwhile.
            self._outage.down(f"a batch of {len(batch)} failed: {type(error).__name__}")
            if self._conn is not None:
                # It may be broken: the next batch starts on a fresh connection.
                with contextlib.suppress(Exception):
                    self._conn.invalidate()
                    self._conn.close()
                self._conn = None
            return StoreUnavailable(f"store commit failed: {type(error).__name__}")

    @property
    def connection(self) -> Connection | None:
        """The connection held between batches while busy; None once given back (idle)."""
        return self._conn

    def _isolating(
        self, conn: Connection, batch: Sequence[tuple[Incoming, str]]
    ) -> list[Receipt | RefusedByStore]:
        try:
            return list(self._transaction(conn, batch))
        except Exception as error:
            if store_down(error):
                raise
            why = storable.safe(f"{type(error).__name__}: {error}", 500)
            if len(batch) == 1:
                log.error("the store refused notification %s: %s", batch[0][1], why)
                return [RefusedByStore(f"the store refused this notification: {why}")]
            log.warning(
                "the store refused a batch of %d notifications (%s); committing it in halves",
                len(batch),
                why,
            )
        half = len(batch) // 2
        return self._isolating(conn, batch[:half]) + self._isolating(conn, batch[half:])

    def _transaction(
        self, conn: Connection, batch: Sequence[tuple[Incoming, str]]
    ) -> list[Receipt]:
        """``batch`` in one transaction, begun and committed on the driver's connection.

        SQLAlchemy's transaction around the statements (its begin hook, commit and bookkeeping)
        cost about 30 us per batch on SQLite, paid while the whole batch of requests waits.
        """
        driver: Any = conn.connection.driver_connection
        self.transactions += 1
        if self._sqlite:
            self._take_write_lock(driver)
        try:
            receipts = commit_batch(conn, batch, self._inserts)
            driver.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # dropped by the caller if the store failed
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
        deadline = time.monotonic() + self._timeout
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
        self._give_back()
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
        else:
            # A locked table or a stalled server fails the batch after the timeout, instead of
            # holding the writer (and every notification queued behind it, in both processes'
            # memory) for as long as the lock is held. Set for the session: the connection is
            # held across batches (and given back without them, _give_back).
            driver = conn.connection.driver_connection
            milliseconds = max(1, round(self._timeout * 1000))
            driver.execute(f"SET statement_timeout = {milliseconds}")
            driver.execute(f"SET lock_timeout = {milliseconds}")
            driver.commit()
        return conn

    def _give_back(self) -> None:
        """Return the held connection to the pool as it came (PostgreSQL: without the writer's
        timeouts, which would reach the next user of a shared engine)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not self._sqlite:
                driver: Any = conn.connection.driver_connection
                driver.execute("RESET statement_timeout")
                driver.execute("RESET lock_timeout")
                driver.commit()
        except Exception:
            with contextlib.suppress(Exception):
                conn.invalidate()
        with contextlib.suppress(Exception):
            conn.close()

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
