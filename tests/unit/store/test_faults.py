"""Which errors say the store is down (fail the batch) and which say one item is bad (isolate it)."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from psycopg import errors as pg
from sqlalchemy import exc

from receiver.store.faults import store_down


def wrapped(error: Exception) -> exc.StatementError:
    """The error as SQLAlchemy raises it around a statement it ran."""
    base = sqlite3.Error if isinstance(error, sqlite3.Error) else psycopg.Error
    return exc.DBAPIError.instance("INSERT ...", {}, error, base)


STORE = [
    sqlite3.OperationalError("database is locked"),
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.OperationalError("no such table: notifications"),
    sqlite3.DatabaseError("file is not a database"),
    pg.QueryCanceled("canceling statement due to statement timeout"),
    pg.LockNotAvailable("canceling statement due to lock timeout"),
    pg.AdminShutdown("terminating connection due to administrator command"),
    pg.DiskFull("could not extend file"),
    pg.UndefinedTable('relation "notifications" does not exist'),
    pg.InsufficientPrivilege("permission denied for table notifications"),
    pg.RaiseException("disk full (injected)"),
    psycopg.InterfaceError("the connection is closed"),
    ConnectionRefusedError("connection refused"),
    exc.TimeoutError("QueuePool limit reached"),
]
ITEM = [
    pg.StringDataRightTruncation("value too long for type character varying(120)"),
    psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
    pg.NotNullViolation("null value in column"),
    pg.InvalidParameterValue("poison (injected)"),
    sqlite3.IntegrityError("constraint failed"),
    UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ValueError("a dedup key is the 64 hex digits of a sha256 digest"),
    TypeError("unsupported type"),
    KeyError("a bug nobody foresaw"),
]


@pytest.mark.parametrize("error", STORE, ids=lambda e: type(e).__name__)
def test_the_store_failing(error: Exception) -> None:
    assert store_down(error)
    if not isinstance(error, OSError | exc.SQLAlchemyError):
        assert store_down(wrapped(error))


@pytest.mark.parametrize("error", ITEM, ids=lambda e: type(e).__name__)
def test_one_item_refused(error: Exception) -> None:
    assert not store_down(error)
    if isinstance(error, psycopg.Error | sqlite3.Error):
        assert not store_down(wrapped(error))
