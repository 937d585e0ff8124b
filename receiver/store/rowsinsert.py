"""Multi-row inserts of plain tuples on the driver's cursor, for the worker's hot tables.

The worker inserts a job per routed notification and an attempt row per finished job. Through
SQLAlchemy's executemany each row's values went through their type's bind processors one by one
(two wrappers per timestamp) and each statement through compilation-cache lookups: a quarter of
the worker's CPU with a no-op handler (py-spy --gil over loadtests/worker_bench.py). Here a batch
is one statement per ``CHUNK`` rows, values a batch shares (its timestamp) are converted once by
``bind``, and the statement text is kept per row count. It runs on the driver's connection, in
the caller's transaction, as ``store.batch.BatchInsert`` does for notifications.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect


class RowsInsert:
    """``INSERT INTO table (columns) VALUES (...), (...) [RETURNING ...]`` for any row count.

    Rows are tuples in ``columns`` order whose values are ready for the driver: a value whose
    column type has a bind processor (timestamps, booleans) goes through ``bind`` first.
    """

    CHUNK = 100  # rows per statement: at most 100 x 10 parameters, far below every driver limit

    def __init__(self, table: Table, columns: Sequence[str], returning: Sequence[str] = ()) -> None:
        for name in (*columns, *returning):
            if name not in table.c:
                raise ValueError(f"{table.name} has no column {name}")
        self._table = table
        self._columns = tuple(columns)
        # Table and column names are our constants; every value goes through a parameter.
        self._head = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "  # noqa: S608
        self._tail = f" RETURNING {', '.join(returning)}" if returning else ""
        self._returns = bool(returning)
        self._sql: dict[tuple[str, int], str] = {}
        self._processors: dict[tuple[str, str], Callable[[Any], Any] | None] = {}

    def bind(self, dialect: Dialect, column: str, value: Any) -> Any:
        """``value`` as the driver takes it for ``column``: through its type's bind processor."""
        key = (dialect.name, column)
        if key not in self._processors:
            column_type = self._table.c[column].type
            self._processors[key] = column_type.dialect_impl(dialect).bind_processor(dialect)
        processor = self._processors[key]
        return value if value is None or processor is None else processor(value)

    def row(self, dialect: Dialect, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """A row from a mapping of column names to values, each through ``bind``."""
        return tuple(self.bind(dialect, name, values[name]) for name in self._columns)

    def run(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Insert ``rows`` in the caller's transaction; the RETURNING columns of each, if any
        (in no promised order)."""
        marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        returned: list[tuple[Any, ...]] = []
        try:
            for start in range(0, len(rows), self.CHUNK):
                chunk = rows[start : start + self.CHUNK]
                cursor.execute(
                    self._statement(marker, len(chunk)), tuple(chain.from_iterable(chunk))
                )
                if self._returns:
                    returned.extend(tuple(row) for row in cursor.fetchall())
        finally:
            cursor.close()
        return returned

    def _statement(self, marker: str, rows: int) -> str:
        sql = self._sql.get((marker, rows))
        if sql is None:
            one = "(" + ", ".join([marker] * len(self._columns)) + ")"
            sql = self._sql[(marker, rows)] = self._head + ", ".join([one] * rows) + self._tail
        return sql
