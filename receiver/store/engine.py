"""The database engine for both stores, and the check that it commits durably.

``make_engine`` makes SQLAlchemy's engine from a ``database_url``: SQLite in WAL mode with
``synchronous=FULL`` on every connection and ``BEGIN IMMEDIATE`` for writes, or PostgreSQL through
psycopg 3 with a pool that pings before use. ``check_durability`` refuses a store that would
acknowledge what it has not flushed. The receiver's store and the dispatcher's use both.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection

from receiver.errors import ConfigError


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
