"""The schema under alembic, on real SQLite files and the real PostgreSQL server: the baseline is
exactly what the release before migrations made, such a database is adopted with every row
kept, and a database that is not current is refused with one line naming the command to run."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, insert, inspect, select, text
from sqlmodel import SQLModel

from receiver.dispatcher import tables as dispatch
from receiver.dispatcher.schema import DISPATCH_SCHEMA
from receiver.errors import ConfigError, SchemaNotCurrent
from receiver.store import ATTEMPTS, JOBS, NOTES, RECEIVER_TABLES, RESULTS, make_engine
from receiver.store.migrate import Schema, check, current, head, history, upgrade
from receiver.store.schema import RECEIVER_SCHEMA
from tests.conftest import BOTH_STORES, empty_database
from tests.dispatcher_support import reset_postgres_dispatch
from tests.fixtures.previous_release import make_previous_release

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SCHEMAS = {"receiver": RECEIVER_SCHEMA, "dispatcher": DISPATCH_SCHEMA}
# The tables of release 0.1.0, parents first.
TABLES: dict[str, list[Table]] = {
    "receiver": [NOTES, JOBS, RESULTS],
    "dispatcher": list(dispatch.DISPATCH_TABLES),
}


@pytest.fixture(params=BOTH_STORES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database without any of our tables (both components' are dropped on PostgreSQL)."""
    url = empty_database(request.param, tmp_path)
    if request.param == "postgres":
        reset_postgres_dispatch(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def shape(engine: Engine, tables: Iterable[str]) -> dict[str, Any]:
    """What the inspector sees of these tables: columns with their types, nullability and
    defaults, keys, indexes with their conditions, unique and foreign keys."""
    inspector = inspect(engine)
    found: dict[str, Any] = {}
    for table in sorted(tables):
        found[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in inspector.get_columns(table)
            ],
            "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (
                    index["name"],
                    tuple(index["column_names"]),
                    bool(index["unique"]),
                    sorted(
                        (key, str(getattr(value, "text", value)))
                        for key, value in index.get("dialect_options", {}).items()
                    ),
                )
                for index in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "foreign keys": sorted(
                (f["referred_table"], tuple(f["constrained_columns"]))
                for f in inspector.get_foreign_keys(table)
            ),
        }
    return found


def drop_all(engine: Engine, component: str) -> None:
    cascade = " CASCADE" if engine.dialect.name == "postgresql" else ""
    with engine.begin() as conn:
        for table in reversed(TABLES[component]):  # dependants first
            conn.execute(text(f"DROP TABLE IF EXISTS {table.name}{cascade}"))
        conn.execute(text(f"DROP TABLE IF EXISTS {SCHEMAS[component].version_table}"))


@pytest.mark.parametrize("component", ["receiver", "dispatcher"])
def test_the_baseline_revision_makes_exactly_what_the_previous_release_made(
    engine: Engine, component: str
) -> None:
    schema = SCHEMAS[component]
    make_previous_release(engine, component)
    made_by_release = shape(engine, schema.baseline_tables)
    drop_all(engine, component)
    upgrade(engine, schema, target=schema.baseline)
    assert shape(engine, schema.baseline_tables) == made_by_release
    assert len(made_by_release) == len(schema.baseline_tables)


def receiver_rows(engine: Engine) -> None:
    """A row in every table of the receiver's: an original, its repeat, a job, a result."""
    with engine.begin() as conn:
        note = {
            "source": "pucomex",
            "event": "duimp.registro",
            "received_at": NOW,
            "client_ip": "161.148.1.1",
            "headers": '{"event-type": "duimp.registro"}',
            "body": b'{"identificacao": {"numero": "26BR0000000011"}}',
            "dedup_key": "ab" * 32,
            "status": "done",
            "routed": True,
            "error": None,
            "recovered": False,
        }
        conn.execute(insert(NOTES), [{**note, "id": "01JD000000000000000000000A"}])
        conn.execute(
            insert(NOTES),
            [
                {
                    **note,
                    "id": "01JD000000000000000000000B",
                    "duplicate_of": "01JD000000000000000000000A",
                    "status": "duplicate",
                }
            ],
        )
        conn.execute(
            insert(JOBS),
            [
                {
                    "notification_id": "01JD000000000000000000000A",
                    "handler": "handlers.duimp:fetch",
                    "status": "done",
                    "attempts": 2,
                    "next_attempt_at": NOW,
                    "last_error": "PortalError: 503",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            ],
        )
        conn.execute(
            insert(RESULTS),
            [{"kind": "duimp", "key": "26BR0000000011", "value": "{}", "updated_at": NOW}],
        )


def dispatcher_rows(engine: Engine) -> None:
    """A row in every table of the dispatcher's."""
    with engine.begin() as conn:
        conn.execute(
            insert(dispatch.SUBSCRIPTIONS),
            [
                {
                    "owner": "sefaz",
                    "evento": "dimp-registro-import",
                    "endpoint": "https://sefaz.example/webhooks/pucomex",
                    "auth_type": "secret",
                    "auth_secret": "0123456789abcdef",
                    "deleted": False,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            ],
        )
        conn.execute(
            insert(dispatch.EVENTS),
            [
                {
                    "id": "01JD000000000000000000000E",
                    "evento": "dimp-registro-import",
                    "emitted_at": NOW,
                    "body": b"{}",
                    "content_type": "application/json",
                }
            ],
        )
        delivery = {
            "event_id": "01JD000000000000000000000E",
            "subscription_id": 1,
            "status": "failed",
            "attempts": 3,
            "next_attempt_at": NOW,
            "created_at": NOW,
            "updated_at": NOW,
        }
        conn.execute(insert(dispatch.DELIVERIES), [delivery])
        conn.execute(
            insert(dispatch.ATTEMPTS),
            [
                {
                    "delivery_id": 1,
                    "number": 1,
                    "started_at": NOW,
                    "finished_at": NOW,
                    "status_code": 500,
                    "ok": False,
                    "outcome": "HTTP 500",
                }
            ],
        )
        conn.execute(
            insert(dispatch.FAILURES),
            [
                {
                    "subscription_id": 1,
                    "delivery_id": 1,
                    "data": "30112026",
                    "recorded_at": NOW,
                    "descricao": "HTTP 500",
                    "evento": "dimp-registro-import",
                    "conteudo": "{}",
                }
            ],
        )
        conn.execute(
            insert(dispatch.CANCELLATIONS),
            [{"subscription_id": 1, "cancelled_at": NOW, "motivo": "30 dias de erros"}],
        )
        conn.execute(
            insert(dispatch.DUIMP_SITUATIONS),
            [
                {
                    "numero": "26BR0000000011",
                    "versao": 1,
                    "situacao": "REGISTRADA",
                    "updated_at": NOW,
                }
            ],
        )


def every_row(engine: Engine, component: str) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as conn:
        return {
            table.name: [
                dict(row)
                for row in conn.execute(
                    select(table).order_by(*table.primary_key.columns)
                ).mappings()
            ]
            for table in TABLES[component]
        }


@pytest.mark.parametrize("component", ["receiver", "dispatcher"])
def test_a_previous_release_database_with_rows_in_every_table_is_adopted_losing_nothing(
    engine: Engine, component: str
) -> None:
    schema = SCHEMAS[component]
    make_previous_release(engine, component)
    (receiver_rows if component == "receiver" else dispatcher_rows)(engine)
    before = every_row(engine, component)
    assert all(before.values()), "a row in every table"
    assert current(engine, schema) is None

    upgraded = upgrade(engine, schema)

    assert upgraded.adopted
    assert (upgraded.before, upgraded.after) == (schema.baseline, head(schema))
    assert every_row(engine, component) == before
    assert current(engine, schema) == head(schema)
    check(engine, schema)  # serve and worker start on it


@pytest.mark.parametrize("component", ["receiver", "dispatcher"])
def test_the_newest_revision_makes_what_the_models_describe(engine: Engine, component: str) -> None:
    """The code reads and writes through the models (receiver.store.tables,
    receiver.dispatcher.tables): the migrations must make exactly those tables."""
    models = RECEIVER_TABLES if component == "receiver" else dispatch.DISPATCH_TABLES
    names = [table.name for table in models]
    SQLModel.metadata.create_all(engine, tables=models)
    described = shape(engine, names)
    cascade = " CASCADE" if engine.dialect.name == "postgresql" else ""
    with engine.begin() as conn:
        for table in reversed(models):
            conn.execute(text(f"DROP TABLE {table.name}{cascade}"))
    upgrade(engine, SCHEMAS[component])
    assert shape(engine, names) == described


def test_a_store_behind_is_refused_then_upgraded_with_its_rows(engine: Engine) -> None:
    upgrade(engine, RECEIVER_SCHEMA, target=RECEIVER_SCHEMA.baseline)
    receiver_rows(engine)
    before = every_row(engine, "receiver")
    with pytest.raises(SchemaNotCurrent) as refused:
        check(engine, RECEIVER_SCHEMA)
    assert str(refused.value).endswith(
        f"is at revision r0001, behind {head(RECEIVER_SCHEMA)}: run `receiver db upgrade`"
    )
    upgraded = upgrade(engine, RECEIVER_SCHEMA)
    assert (upgraded.before, upgraded.after) == ("r0001", head(RECEIVER_SCHEMA))
    assert every_row(engine, "receiver") == before
    with engine.connect() as conn:  # the attempts' table is there, empty
        assert conn.execute(select(ATTEMPTS)).all() == []
    check(engine, RECEIVER_SCHEMA)


def test_a_fresh_database_is_upgraded_to_head_and_a_second_upgrade_changes_nothing(
    engine: Engine,
) -> None:
    first = upgrade(engine, RECEIVER_SCHEMA)
    assert (first.before, first.after, first.adopted) == (None, head(RECEIVER_SCHEMA), False)
    assert set(RECEIVER_SCHEMA.baseline_tables) <= set(inspect(engine).get_table_names())
    second = upgrade(engine, RECEIVER_SCHEMA)
    assert (second.before, second.after, second.adopted) == (first.after, first.after, False)
    assert "already at" in second.summary(RECEIVER_SCHEMA, "here")
    # The receiver's history leaves the dispatcher's tables alone, and the other way round.
    assert not {t for t in inspect(engine).get_table_names() if t.startswith("dispatch")}


def test_tables_that_are_not_the_previous_release_s_are_not_adopted_nor_changed(
    engine: Engine,
) -> None:
    make_previous_release(engine)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE handler_results ADD COLUMN extra TEXT"))
    with pytest.raises(ConfigError, match=r"table handler_results .*unexpected: extra"):
        upgrade(engine, RECEIVER_SCHEMA)
    assert current(engine, RECEIVER_SCHEMA) is None
    assert RECEIVER_SCHEMA.version_table not in inspect(engine).get_table_names()


def test_some_tables_of_the_previous_release_missing_is_not_adopted(engine: Engine) -> None:
    make_previous_release(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE handler_results"))
    with pytest.raises(ConfigError, match="but not handler_results"):
        upgrade(engine, RECEIVER_SCHEMA)
    assert current(engine, RECEIVER_SCHEMA) is None


def stamp(engine: Engine, schema: Schema, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {schema.version_table} SET version_num = :r"), {"r": revision})


def test_every_state_but_current_is_refused_with_one_line_naming_the_command(
    engine: Engine,
) -> None:
    def refusal() -> str:
        with pytest.raises(SchemaNotCurrent) as refused:
            check(engine, RECEIVER_SCHEMA)
        message = str(refused.value)
        assert "\n" not in message
        return message

    assert refusal().endswith("has no receiver tables: run `receiver db upgrade`")
    make_previous_release(engine)
    assert "was made by the release before migrations: run `receiver db upgrade`" in refusal()
    upgrade(engine, RECEIVER_SCHEMA)
    check(engine, RECEIVER_SCHEMA)
    stamp(engine, RECEIVER_SCHEMA, "r9999")
    ahead = refusal()
    assert "at revision r9999, which this release does not know" in ahead
    assert "never downgraded" in ahead
    with pytest.raises(SchemaNotCurrent, match="r9999"):
        upgrade(engine, RECEIVER_SCHEMA)  # never "upgraded" past what it cannot know
    with pytest.raises(SchemaNotCurrent, match="run `receiver dispatcher db upgrade`"):
        check(engine, DISPATCH_SCHEMA)


def test_the_history_starts_at_the_baseline_and_ends_at_the_head() -> None:
    for schema in SCHEMAS.values():
        revisions = history(schema)
        assert revisions[0].id == schema.baseline
        assert revisions[0].down is None
        assert revisions[-1].head and revisions[-1].id == head(schema)
        assert all(revision.message for revision in revisions)
        # What check() compares with, without alembic: a new revision must update it.
        assert schema.head == head(schema), f"{schema.name}: Schema.head is not the newest revision"
