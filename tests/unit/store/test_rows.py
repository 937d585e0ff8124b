"""``rows.NOTE_ROW`` (what the writers insert, without SQLModel) matches the notifications table."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine
from sqlmodel.sql.sqltypes import AutoString

from receiver.store.batch import BatchInsert
from receiver.store.rows import EVENT_CHARS, NOTE_ROW
from receiver.store.tables import NOTES

# Engines that never connect: their dialects, as the writers get them.
DIALECTS = [create_engine(url).dialect for url in ("sqlite://", "postgresql+psycopg://")]


def test_the_row_names_the_table() -> None:
    assert NOTE_ROW.name == NOTES.name


@pytest.mark.parametrize("column", BatchInsert.COLUMNS)
def test_each_inserted_column_has_the_tables_type(column: str) -> None:
    ours, theirs = NOTE_ROW.c[column].type, NOTES.c[column].type
    # SQLModel's str columns are its AutoString, a TypeDecorator over String that binds as
    # String does; every other type is the same class.
    if type(theirs) is not AutoString:
        assert type(ours) is type(theirs)
    assert getattr(ours, "length", None) == getattr(theirs, "length", None)
    for dialect in DIALECTS:
        assert ours.compile(dialect=dialect) == theirs.compile(dialect=dialect)
        bind = ours.dialect_impl(dialect).bind_processor(dialect)
        their_bind = theirs.dialect_impl(dialect).bind_processor(dialect)
        assert (bind is None) == (their_bind is None)


def test_the_row_has_only_the_inserted_columns() -> None:
    assert tuple(NOTE_ROW.c.keys()) == BatchInsert.COLUMNS
    assert NOTES.c.event.type.length == EVENT_CHARS
