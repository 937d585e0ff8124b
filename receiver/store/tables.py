"""The tables: notifications as received, one job per (notification, handler), each attempt of a
job, handler results; the console's audit log, the Portal recovery runs, and the alerts' episodes
and checks. They are made by the migrations (``receiver.store.migrations``, run by ``receiver db
upgrade``), which must match these models: ``tests/integration/store/test_migrations.py``
compares them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from receiver.store.rows import EVENT_CHARS

# Re-exported (defined in rows, which the writer process imports without SQLModel): the rest of
# the store, and the dispatcher's tables, name them from here.
from receiver.store.rows import Digest as Digest
from receiver.store.rows import JobStatus as JobStatus
from receiver.store.rows import NoteStatus as NoteStatus
from receiver.store.rows import UTCDateTime as UTCDateTime
from receiver.store.rows import utcnow as utcnow

# The statuses an operator may have to act on: the partial index above holds only these.
ATTENTION_STATUSES = ("pending", "failed", "dead", "quarantined")
NEEDS_ATTENTION = "status IN ('pending', 'failed', 'dead', 'quarantined')"


def _utc_column(nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class StoredNotification(SQLModel, table=True):
    __tablename__ = "notifications"
    __table_args__ = (
        # One original per dedup key; repeats are stored as receipts pointing at it.
        Index(
            "uq_notifications_original",
            "dedup_key",
            unique=True,
            sqlite_where=text("duplicate_of IS NULL"),
            postgresql_where=text("duplicate_of IS NULL"),
        ),
        # What the worker still has to route (planner.plan). It holds only unrouted originals, so it
        # stays small, and it finds them whatever order their commits landed in.
        Index(
            "ix_notifications_unrouted",
            "id",
            sqlite_where=text("routed = 0"),
            postgresql_where=text("routed = false"),
        ),
        # The notifications that need an operator, by status, newest last: the console's status
        # filter and its counts per status read only this. Partial, so done notifications and
        # duplicates (nearly every row) leave it; a query must repeat NEEDS_ATTENTION word for word
        # for SQLite to use it. Everything else: listings go in id order (ids are time-ordered
        # ULIDs), a date bound becomes an id range (ids.id_floor), and other filters scan a
        # bounded window (receiver.console.inbox): every index is written by every insert.
        Index(
            "ix_notifications_attention",
            "status",
            "id",
            sqlite_where=text(NEEDS_ATTENTION),
            postgresql_where=text(NEEDS_ATTENTION),
        ),
        # The receipts of repeats, by the original they point at (the console's notification
        # page); an original (nearly every insert) is not in it.
        Index(
            "ix_notifications_duplicates",
            "duplicate_of",
            sqlite_where=text("duplicate_of IS NOT NULL"),
            postgresql_where=text("duplicate_of IS NOT NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=26)
    source: str = Field(max_length=64)
    event: str | None = Field(default=None, max_length=EVENT_CHARS)
    received_at: datetime = Field(sa_column=_utc_column())
    client_ip: str = Field(max_length=64)
    headers: str = Field(sa_column=Column(Text, nullable=False))  # JSON, credentials removed
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    dedup_key: str = Field(sa_column=Column(Digest(), nullable=False))  # hex in Python
    duplicate_of: str | None = Field(default=None, max_length=26)
    status: str = Field(default=NoteStatus.PENDING, max_length=16)
    routed: bool = Field(default=False)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    recovered: bool = Field(default=False)


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("notification_id", "handler", name="uq_jobs_notification_handler"),
        Index("ix_jobs_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    notification_id: str = Field(index=True, max_length=26, foreign_key="notifications.id")
    handler: str = Field(max_length=200)
    status: str = Field(default=JobStatus.PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_column=_utc_column())
    lease_until: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=_utc_column())
    updated_at: datetime = Field(sa_column=_utc_column())


class JobAttempt(SQLModel, table=True):
    """One attempt of one job: when, how it ended, and the error (type, message, traceback bounded
    to its innermost frames by ``receiver.worker.failures``). Written with the job's outcome, in
    the same transaction; deleted with the notification by retention."""

    __tablename__ = "job_attempts"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id", index=True)
    notification_id: str = Field(max_length=26, foreign_key="notifications.id", index=True)
    handler: str = Field(max_length=200)
    attempt: int
    started_at: datetime = Field(sa_column=_utc_column())
    finished_at: datetime = Field(sa_column=_utc_column())
    outcome: str = Field(max_length=16)  # receiver.worker.failures.AttemptOutcome
    error_type: str | None = Field(default=None, max_length=200)
    message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    traceback: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class HandlerResult(SQLModel, table=True):
    """What handlers keep (``ctx.save``), keyed by kind and idempotency key: a replay overwrites."""

    __tablename__ = "handler_results"

    kind: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=200)
    value: str = Field(sa_column=Column(Text, nullable=False))  # JSON
    updated_at: datetime = Field(sa_column=_utc_column())


class AuditEntry(SQLModel, table=True):
    """What someone did in the operator console: logins (failed too), logouts, replays."""

    __tablename__ = "console_audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=_utc_column())
    who: str = Field(max_length=200)
    role: str = Field(max_length=16)
    action: str = Field(max_length=40)
    target: str = Field(sa_column=Column(Text, nullable=False))
    client_ip: str = Field(max_length=64)


class RecoveryRun(SQLModel, table=True):
    """One run of the Portal recovery (receiver.runtime.recovery) for one day of failure records,
    and what it brought back."""

    __tablename__ = "recovery_runs"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=_utc_column())
    day: str = Field(max_length=8)  # ddMMyyyy, as the failure search takes it
    seen: int = 0
    distinct: int = 0
    already_stored: int = 0
    recovered: int = 0
    ids: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of the ids stored
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class AlertEpisode(SQLModel, table=True):
    """One episode of an alert (``receiver.alerts``): from the evaluation that found the rule's
    condition to the one that found it gone. At most one open episode per rule and subject (the
    unique index), so two evaluators, or one restarted, never fire the same alert twice; the sinks
    an episode's firing and resolution reached are kept, so a failed sink is tried again."""

    __tablename__ = "alert_episodes"
    __table_args__ = (
        Index(
            "uq_alert_episodes_open",
            "rule",
            "subject",
            unique=True,
            sqlite_where=text("resolved_at IS NULL"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    rule: str = Field(max_length=64)
    # What the rule is about ("" for the whole receiver): a subscription, an event.
    subject: str = Field(default="", max_length=600)
    summary: str = Field(sa_column=Column(Text, nullable=False))
    fired_at: datetime = Field(sa_column=_utc_column())
    # The last evaluation that still found the condition (summary as of then).
    seen_at: datetime = Field(sa_column=_utc_column())
    resolved_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    # Sinks that were told, as "log,webhook,email".
    fired_sent: str = Field(default="", max_length=200)
    resolved_sent: str = Field(default="", max_length=200)


class AlertCheck(SQLModel, table=True):
    """The last evaluation of the alerts, by evaluator: a row written every evaluation, which is
    also the write that tells whether the store takes writes."""

    __tablename__ = "alert_checks"

    name: str = Field(primary_key=True, max_length=64)
    checked_at: datetime = Field(sa_column=_utc_column())


# The tables as SQLAlchemy Core sees them, for the statements of the store and the inbox.
NOTES = StoredNotification.__table__  # type: ignore[attr-defined]
JOBS = Job.__table__  # type: ignore[attr-defined]
RESULTS = HandlerResult.__table__  # type: ignore[attr-defined]
ATTEMPTS = JobAttempt.__table__  # type: ignore[attr-defined]
AUDIT = AuditEntry.__table__  # type: ignore[attr-defined]
RECOVERY_RUNS = RecoveryRun.__table__  # type: ignore[attr-defined]
EPISODES = AlertEpisode.__table__  # type: ignore[attr-defined]
ALERT_CHECKS = AlertCheck.__table__  # type: ignore[attr-defined]
# Parents first.
RECEIVER_TABLES = [NOTES, JOBS, RESULTS, ATTEMPTS, EPISODES, ALERT_CHECKS, AUDIT, RECOVERY_RUNS]
