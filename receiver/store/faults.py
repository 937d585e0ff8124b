"""Telling the store failing apart from one item it refuses, for whatever writes batches.

A batch that fails because of one item (a value too long, a NUL, a constraint) is worth splitting:
the other items go through, and only the culprit gets the error. A batch that fails because the
store itself cannot take it (unreachable, locked past its wait, out of disk, cancelled by its
statement timeout, its table gone, permission revoked) is not: every part would fail the same
way, each after its own wait, and the answer everyone needs is "try again later" (and not ready).

The classes are PEP 249's, named alike by every driver (sqlite3, psycopg) and by SQLAlchemy's
wrappers of them, so this holds for statements run through SQLAlchemy and straight on the driver:

- the store: ``OperationalError`` (connection lost, lock or statement timeout, disk full, SQLite
  busy or "no such table"), ``InterfaceError``, ``InternalError`` (a trigger's RAISE on
  PostgreSQL), ``ProgrammingError`` (undefined table, insufficient privilege),
  ``NotSupportedError``, a bare ``DatabaseError`` ("file is not a database"), ``OSError``, and
  SQLAlchemy's pool timeout;
- one item: everything else, ``DataError``, ``IntegrityError``, ``ValueError`` (a lone surrogate's
  ``UnicodeEncodeError``, a type decorator refusing a value), ``TypeError`` and the unforeseen: a
  poison item that found a new exception must still not fail everybody else.
"""

from __future__ import annotations

from sqlalchemy import exc

_STORE_CLASSES = frozenset(
    {"OperationalError", "InterfaceError", "InternalError", "ProgrammingError", "NotSupportedError"}
)


def store_down(error: BaseException) -> bool:
    """True when ``error`` says the store cannot take any write now, not that one item is bad."""
    if isinstance(error, OSError | exc.TimeoutError | exc.DisconnectionError):
        return True
    kind = type(error)
    if kind.__name__ == "DatabaseError":
        return True
    return any(cls.__name__ in _STORE_CLASSES for cls in kind.__mro__)
