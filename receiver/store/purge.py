"""Retention: deleting what ``retention:`` no longer keeps, a little at a time.

A pass walks the notifications in id order (ids are time-ordered, so the walk stops at the most
recent cutoff, and there is no index on status or received_at for every insert to write), reading
``SCAN_ROWS`` ids, statuses and dates at a time without any lock. What it finds to delete goes in
transactions of ``batch_size`` notifications: each checks again, under the write lock, that the
row is still in a purged status and old enough (a replay may have made it pending meanwhile),
then deletes its jobs' attempts, its jobs and the row. A notification's receipts (status ``duplicate``) have their
own retention; a receipt kept longer than its original points at an id that is gone. Handler
results are not a notification's: they are purged by ``results_days`` alone, by when they were
last written.

On SQLite the freed pages go back to the filesystem with ``PRAGMA incremental_vacuum``, in steps
of ``VACUUM_PAGES``, when the file was made with ``auto_vacuum=INCREMENTAL``; otherwise they are
reused by later rows (the file stops growing but does not shrink), said once in the log.

The caller paces the steps (``Purger.step``, ``Purger.vacuum_step``): ``serve`` waits between
them on its event loop, so ingest's writer, which waits for SQLite's write lock, gets it back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from receiver import metrics
from receiver.ids import id_floor
from receiver.retention import DAY, RetentionSettings
from receiver.store.facade import ID_LEAD, Store
from receiver.store.tables import ATTEMPTS, JOBS, NOTES, RESULTS, utcnow

log = logging.getLogger("receiver.retention")

SCAN_ROWS = 2000  # ids, statuses and dates read per look (no lock held)
VACUUM_PAGES = 256  # SQLite pages returned per incremental_vacuum step (1 MiB of 4 KiB pages)
AUTO_VACUUM_INCREMENTAL = 2

# Said once per process: the file cannot shrink.
_told_not_incremental: set[str] = set()


@dataclass
class PurgeReport:
    """What a pass deleted (or, dry, would delete): notifications by status, handler results."""

    notes: dict[str, int] = field(default_factory=dict)
    results: int = 0
    pages_returned: int = 0

    def lines(self) -> list[str]:
        found = [f"{status}: {count}" for status, count in sorted(self.notes.items())]
        return [*found, f"handler results: {self.results}"]


class Purger:
    """One retention pass over a store, in steps (``step`` until it returns 0), then the vacuum.

    ``now`` fixes the cutoffs for the whole pass.
    """

    def __init__(
        self,
        store: Store,
        retention: RetentionSettings,
        *,
        dry_run: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._retention = retention
        self._dry = dry_run
        now = clock()
        self._cutoffs = retention.cutoffs(now)
        self._results_cutoff = (
            now - retention.results_days * DAY if retention.results_days is not None else None
        )
        # The walk: ids after this one are still to be read, up to this bound.
        self._after: str | None = ""
        self._bound = id_floor(max(self._cutoffs.values()) + ID_LEAD) if self._cutoffs else ""
        self._found: list[str] = []  # read, old enough, not yet deleted
        self._results_done = self._results_cutoff is None
        self.report = PurgeReport()

    # --- notifications ---------------------------------------------------------------------

    def _purgeable(self) -> ColumnElement[bool]:
        return or_(
            *(
                and_(NOTES.c.status == status, NOTES.c.received_at < cutoff)
                for status, cutoff in self._cutoffs.items()
            )
        )

    def _read_more(self) -> bool:
        """Read the next ids of the walk; False when it is over."""
        after = self._after
        if not self._bound or after is None:
            return False
        query = (
            select(NOTES.c.id, NOTES.c.status, NOTES.c.received_at)
            .where(NOTES.c.id > after, NOTES.c.id < self._bound)
            .order_by(NOTES.c.id)
            .limit(SCAN_ROWS)
        )
        with self._store.reading() as conn:
            rows = conn.execute(query).all()
        if not rows:
            self._after = None
            return False
        self._after = rows[-1][0]
        for note_id, status, received_at in rows:
            cutoff = self._cutoffs.get(status)
            if cutoff is not None and received_at < cutoff:
                if self._dry:
                    self.report.notes[status] = self.report.notes.get(status, 0) + 1
                else:
                    self._found.append(note_id)
        return True

    def step(self) -> int:
        """Delete the next batch (or, dry, count further); how many rows it took, 0 when the
        pass has nothing left."""
        batch = self._retention.batch_size
        while len(self._found) < batch and self._read_more():
            if self._dry:
                return SCAN_ROWS
        if self._found:
            chosen, self._found = self._found[:batch], self._found[batch:]
            return self._delete_notes(chosen) or 1
        if not self._results_done:
            return self._delete_results()
        return 0

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction whose commit does not wait for the disk on SQLite.

        With synchronous=FULL each purge commit waited for an fsync (about 20 ms here) while
        holding the write lock that ingest's group commit waits for. A deletion lost to a power
        cut is only done again by the next pass, so the purge's connection commits with
        synchronous=NORMAL; ingest's next commit, with FULL, syncs the WAL up to its own frames,
        the purge's included, and its durability is unchanged.
        """
        with self._store.engine.connect() as conn:
            driver: Any = conn.connection.driver_connection
            sqlite = self._store.dialect == "sqlite"
            if sqlite:
                driver.execute("PRAGMA synchronous=NORMAL")  # autocommit: no lock taken
            try:
                with conn.begin():
                    yield conn
            finally:
                if sqlite:
                    driver.execute("PRAGMA synchronous=FULL")

    def _delete_notes(self, chosen: list[str]) -> int:
        with self._writing() as conn:
            still = conn.execute(
                select(NOTES.c.id, NOTES.c.status)
                .where(NOTES.c.id.in_(chosen), self._purgeable())
                .with_for_update()
            ).all()
            ids = [note_id for note_id, _ in still]
            if ids:
                # Children first: the attempts name their job and notification.
                conn.execute(delete(ATTEMPTS).where(ATTEMPTS.c.notification_id.in_(ids)))
                conn.execute(delete(JOBS).where(JOBS.c.notification_id.in_(ids)))
                conn.execute(delete(NOTES).where(NOTES.c.id.in_(ids)))
        for _, status in still:
            self.report.notes[status] = self.report.notes.get(status, 0) + 1
            metrics.PURGED.labels(status).inc()
        return len(ids)

    # --- handler results -------------------------------------------------------------------

    def _delete_results(self) -> int:
        cutoff = self._results_cutoff
        assert cutoff is not None
        old = (
            select(RESULTS.c.kind, RESULTS.c.key)
            .where(RESULTS.c.updated_at < cutoff)
            .limit(self._retention.batch_size)
        )
        if self._dry:
            with self._store.reading() as conn:
                self.report.results = len(
                    conn.execute(select(RESULTS.c.key).where(RESULTS.c.updated_at < cutoff)).all()
                )
            self._results_done = True
            return 0
        with self._writing() as conn:
            keys = [tuple(row) for row in conn.execute(old).all()]
            if keys:
                conn.execute(
                    delete(RESULTS).where(
                        tuple_(RESULTS.c.kind, RESULTS.c.key).in_(keys),
                        RESULTS.c.updated_at < cutoff,
                    )
                )
        if len(keys) < self._retention.batch_size:
            self._results_done = True
        self.report.results += len(keys)
        metrics.PURGED.labels("results").inc(len(keys))
        return len(keys)

    # --- SQLite's free pages -------------------------------------------------------------

    def vacuum_step(self) -> int:
        """SQLite: return up to VACUUM_PAGES free pages to the filesystem; how many were free
        before (0: nothing left, or not a file that can shrink). Nothing on PostgreSQL, whose
        autovacuum makes the space of deleted rows reusable."""
        engine = self._store.engine
        if self._dry or engine.dialect.name != "sqlite" or not engine.url.database:
            return 0
        raw: Any = engine.raw_connection()
        try:
            driver = raw.driver_connection
            mode = driver.execute("PRAGMA auto_vacuum").fetchone()[0]
            free = int(driver.execute("PRAGMA freelist_count").fetchone()[0])
            if mode != AUTO_VACUUM_INCREMENTAL:
                if free and engine.url.database not in _told_not_incremental:
                    _told_not_incremental.add(engine.url.database)
                    log.warning(
                        "%s was not made with auto_vacuum=INCREMENTAL: the space purges free "
                        "is reused by new notifications, but the file does not shrink. To "
                        "switch (once, with the receiver stopped): sqlite3 %s "
                        "'PRAGMA auto_vacuum=INCREMENTAL; VACUUM;'",
                        engine.url.database,
                        engine.url.database,
                    )
                return 0
            if free:
                # In autocommit, a write transaction of its own; fetchall runs every step of it.
                # Committed without waiting for the disk, as the deletions are (_writing).
                driver.execute("PRAGMA synchronous=NORMAL")
                try:
                    driver.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
                finally:
                    driver.execute("PRAGMA synchronous=FULL")
                self.report.pages_returned += min(free, VACUUM_PAGES)
            return free
        finally:
            raw.close()
