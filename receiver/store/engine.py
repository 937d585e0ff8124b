"""The database engine for both stores, and the check that it commits durably.

``make_engine`` makes SQLAlchemy's engine from a ``database_url``: SQLite in WAL mode with
``synchronous=FULL`` on every connection and ``BEGIN IMMEDIATE`` for writes, or PostgreSQL through
psycopg 3 with a pool that pings before use. ``check_durability`` refuses a store that would
acknowledge what it has not flushed. The receiver's store and the dispatcher's use both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from receiver.errors import ConfigError, StoreUnavailable

# Execution option of a write transaction whose commit need not be on disk when it returns (the
# handler worker's plans, claims, outcomes and results; Store.relaxed_writes says why that is
# safe). Never ingest's: an acknowledged notification is committed with synchronous=FULL or
# PostgreSQL's durable commit, whatever was relaxed before it.
RELAXED = "receiver_relaxed_durability"


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here; SQLAlchemy alone would pick psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, pool_size: int = 8, origin: str = "receiver.yaml") -> Engine:
    """The engine for ``url``; a ConfigError naming ``origin`` (the settings file) and the key
    when the URL is not one (nothing is connected yet)."""
    url = normalise_url(url)
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            _make_sqlite_durable(engine)
            return engine
        if url.startswith("postgresql"):
            engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                pool_timeout=5,
                connect_args={"connect_timeout": 5},
            )
            _let_postgres_relax(engine)
            return engine
    except (ArgumentError, ValueError) as error:
        # The message may quote the URL, password and all: only the kind of mistake is told.
        why = "a port that is not a number" if "port" in str(error).lower() else "not a URL"
        raise ConfigError(f"{origin}: database_url: {why}") from None
    raise ConfigError(f"{origin}: database_url: unsupported database {url.split(':')[0]!r}")


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
        options = connection.get_execution_options()
        if options.get("sqlite_readonly"):
            connection.exec_driver_sql("BEGIN")
            return
        # synchronous is the connection's, not the transaction's: set for each write transaction
        # that differs from the connection's last, so a pooled connection a relaxed transaction
        # used is FULL again for the next durable one.
        relaxed = bool(options.get(RELAXED))
        if connection.info.get(RELAXED, False) != relaxed:
            connection.exec_driver_sql(f"PRAGMA synchronous={'NORMAL' if relaxed else 'FULL'}")
            connection.info[RELAXED] = relaxed
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _let_postgres_relax(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(RELAXED):
            # This transaction only: the commit returns before its WAL record is flushed (the
            # next durable commit, or the WAL writer within 3 x wal_writer_delay, flushes it).
            connection.exec_driver_sql("SET LOCAL synchronous_commit TO off")


def in_memory(engine: Engine) -> bool:
    """A SQLite ``:memory:`` database: for tests only, and invisible to other processes."""
    return engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")


def safe_url(engine: Engine) -> str:
    """The engine's URL with its password hidden, for messages."""
    return engine.url.render_as_string(hide_password=True)


def check_durability(engine: Engine) -> None:
    """Refuse (ConfigError) a store that would acknowledge what it has not flushed: SQLite not in
    WAL with ``synchronous=FULL`` (a file; ``:memory:`` is for tests), or PostgreSQL with
    ``fsync`` or ``synchronous_commit`` off."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            if not in_memory(engine) and (str(mode).lower() != "wal" or sync != 2):
                raise ConfigError(f"{safe_url(engine)}: SQLite is not WAL + synchronous=FULL")
        elif engine.dialect.name == "postgresql":
            for setting in ("fsync", "synchronous_commit"):
                value = conn.exec_driver_sql(f"SHOW {setting}").scalar()
                if str(value).lower() not in ("on", "remote_write", "remote_apply"):
                    raise ConfigError(
                        f"{safe_url(engine)}: PostgreSQL {setting} is {value}; acknowledged "
                        "notifications could be lost. Turn it on."
                    )


# What PostgreSQL or the network says, and whether it is a mistake in the settings (exit 2: fix
# them) or something that may pass (exit 3: systemd and compose try again).
_CAUSES: tuple[tuple[re.Pattern[str], str, bool], ...] = (
    (re.compile(r'database "([^"]+)" does not exist'), "database {0} does not exist", True),
    (re.compile(r'role "([^"]+)" does not exist'), "role {0} does not exist", True),
    (
        re.compile(r'authentication failed for user "([^"]+)"'),
        "authentication failed for user {0}",
        True,
    ),
    (re.compile(r"no password supplied"), "authentication failed: no password given", True),
    (re.compile(r"Connection refused"), "connection refused (is the server running?)", False),
    (re.compile(r"failed to resolve host '([^']+)'"), "cannot resolve host {0}", False),
    (re.compile(r"timeout expired|timed out"), "no answer within 5 s", False),
)


def _cause(engine: Engine, error: BaseException) -> tuple[str, bool]:
    """Why ``engine`` could not connect, in a few words, and whether the settings are wrong."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database or ""
        folder = Path(database).parent
        if not folder.is_dir():
            return f"folder {folder} does not exist (it is not created for you)", True
        return f"cannot open {database}: {getattr(error, 'orig', error)}", True
    message = str(getattr(error, "orig", error))
    for pattern, told, config in _CAUSES:
        found = pattern.search(message)
        if found is not None:
            return told.format(*found.groups()), config
    first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return first[:300], False


def check_reachable(engine: Engine, origin: str = "receiver.yaml") -> None:
    """Connect once and ask for nothing: a ConfigError naming ``origin`` when the settings are
    wrong (a database or role that does not exist, refused credentials, a SQLite file in a
    folder that does not exist), a StoreUnavailable when the server cannot be reached now
    (refused, unknown host, no answer); one line each, with the URL without its password."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        raise unreachable(engine, error, origin) from None


def unreachable(
    engine: Engine, error: BaseException, origin: str = "receiver.yaml"
) -> ConfigError | StoreUnavailable:
    """The one-line error for a connection that failed (see ``check_reachable``)."""
    cause, config = _cause(engine, error)
    where = safe_url(engine)
    if config:
        return ConfigError(f"{origin}: database_url: {where}: {cause}")
    return StoreUnavailable(f"cannot reach the store at {where}: {cause}")
