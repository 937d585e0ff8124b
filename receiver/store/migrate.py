"""The schema under version control: alembic, driven from code (no alembic.ini, no env.py).

A ``Schema`` names one history of revisions shipped inside the package (``migrations/versions``
beside the tables they make) and the table that records where a database stands in it. The
receiver's store and the dispatcher's each have one, with their own version table, because they
are separate stores: the dispatcher is the Portal's side and keeps its tables in its own database
by default (``dispatcher.db``), is upgraded by its own command, and a receiver deployment that
never runs it never carries its tables. Sharing one history would make either upgrade create the
other's tables.

``upgrade`` brings a database to the newest revision; a database made by the release before
migrations (its tables made by ``create_all``, no version table) is adopted first: its tables are
checked against the baseline revision, then it is stamped there, and upgraded like any other.
``check`` is what the serving commands call: a database that is behind, ahead (a revision this
code does not know: a newer release upgraded it) or empty raises ``SchemaNotCurrent``, one line
naming the command to run, exit 2.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, inspect, sql, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from receiver.errors import ConfigError, SchemaNotCurrent
from receiver.store.engine import safe_url, unreachable

if TYPE_CHECKING:
    # alembic, and mako and pygments with it, is 11.5 MiB in every process that imports it: only
    # the commands that upgrade, stamp or list revisions do (``check`` has a way around it).
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

# alembic says "Context impl SQLiteImpl." and "Will assume transactional DDL." at INFO on every
# check and upgrade, and "setup plugin ..." seven times when it is imported (now after the
# commands set up logging): nothing an operator acts on; `db upgrade` answers in one line.
logging.getLogger("alembic").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Schema:
    """One history of revisions and where a database records its place in it."""

    name: str  # "receiver", "dispatcher": for messages
    location: Path  # the folder holding ``versions/``
    version_table: str
    baseline: str  # the revision that is the schema of the release before migrations
    # The newest revision, written out so ``check`` can compare without loading the history
    # (a unit test holds it equal to alembic's head: a new revision must update it).
    head: str
    # The tables and columns that release's ``create_all`` made: what adoption checks.
    baseline_tables: Mapping[str, frozenset[str]]
    upgrade_command: str  # what an operator runs, for messages


@dataclass(frozen=True)
class Revision:
    id: str
    down: str | None
    message: str
    head: bool


@dataclass(frozen=True)
class Upgraded:
    before: str | None  # None: the database had no version table
    after: str
    adopted: bool  # it was made by the release before migrations, and stamped at the baseline

    def summary(self, schema: Schema, where: str) -> str:
        if self.adopted:
            told = f"adopted the tables of the release before migrations at {schema.baseline}"
            if self.after != schema.baseline:
                told += f", upgraded to {self.after}"
            return f"{schema.name} store at {where}: {told}"
        if self.before == self.after:
            return f"{schema.name} store at {where}: already at {self.after} (head)"
        return (
            f"{schema.name} store at {where}: upgraded {self.before or '<empty>'} -> {self.after}"
        )


@cache
def _script(location: Path) -> ScriptDirectory:
    # Read once per process: serve checks at start, and every test's store would parse it again.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(location))
    return ScriptDirectory.from_config(config)


def head(schema: Schema) -> str:
    """The newest revision this code knows."""
    found = _script(schema.location).get_current_head()
    assert found is not None, f"{schema.location} has no revision"
    return found


def history(schema: Schema) -> list[Revision]:
    """Every revision, oldest first."""
    script = _script(schema.location)
    newest = script.get_current_head()
    revisions = [
        Revision(
            id=rev.revision,
            down=rev.down_revision if isinstance(rev.down_revision, str) else None,
            message=" ".join((rev.doc or "").split()),  # its first paragraph, one line
            head=rev.revision == newest,
        )
        for rev in script.walk_revisions()
    ]
    return list(reversed(revisions))


def _migration_context(conn: Connection, schema: Schema) -> MigrationContext:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": schema.version_table})


def current(engine: Engine, schema: Schema) -> str | None:
    """The revision the database is at; None when it has no version table (empty, or made by
    the release before migrations)."""
    try:
        with engine.connect() as conn:
            heads = _migration_context(conn, schema).get_current_heads()
    except SQLAlchemyError as error:
        raise unreachable(engine, error) from error
    return heads[0] if heads else None


def _present(conn: Connection, schema: Schema) -> set[str]:
    return set(inspect(conn).get_table_names()) & set(schema.baseline_tables)


def _adopt(conn: Connection, schema: Schema, where: str) -> None:
    """Check that the tables the previous release made are the baseline's, then stamp it."""
    present = _present(conn, schema)
    missing = sorted(set(schema.baseline_tables) - present)
    if missing:
        raise ConfigError(
            f"{where}: has {', '.join(sorted(present))} but not {', '.join(missing)}, and no "
            f"{schema.version_table}: not a {schema.name} store this release can adopt"
        )
    inspector = inspect(conn)
    for table, columns in schema.baseline_tables.items():
        found = {column["name"] for column in inspector.get_columns(table)}
        if found != columns:
            extra = ", ".join(sorted(found - columns)) or "none"
            lacking = ", ".join(sorted(columns - found)) or "none"
            raise ConfigError(
                f"{where}: table {table} does not have the columns the previous release made "
                f"(missing: {lacking}; unexpected: {extra}): not adopted, nothing changed"
            )
    _migration_context(conn, schema).stamp(_script(schema.location), schema.baseline)


def upgrade(engine: Engine, schema: Schema, target: str = "heads") -> Upgraded:
    """Bring the database to ``target`` (the newest revision by default), in one transaction. A database the previous release made (tables,
    no version table) is adopted at the baseline first; a database at a revision this code does
    not know is refused (SchemaNotCurrent), never downgraded.
    """
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext

    script = _script(schema.location)
    where = safe_url(engine)
    try:
        _incremental_vacuum_when_new(engine)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Two upgrades started at once (a compose restart, two hosts): the second waits,
                # then finds nothing to do. The key is any constant of ours.
                conn.execute(text("SELECT pg_advisory_xact_lock(7262)"))
            context = _migration_context(conn, schema)
            heads = context.get_current_heads()
            adopted = not heads and bool(_present(conn, schema))
            if adopted:
                _adopt(conn, schema, where)
            before = heads[0] if heads else (schema.baseline if adopted else None)
            if before is not None and before not in _known(schema):
                raise _ahead(schema, where, before)

            def steps(rev: Any, _context: MigrationContext) -> Any:
                # What alembic's own ``command.upgrade`` hands its env.py (unchanged since
                # alembic 0.7): we are the env.py, so no script file is shipped or read.
                return script._upgrade_revs(target, rev)

            environment = EnvironmentContext(
                Config(), script, fn=steps, destination_rev=target, as_sql=False
            )
            with environment:
                environment.configure(connection=conn, version_table=schema.version_table)
                environment.run_migrations()
            after = _migration_context(conn, schema).get_current_heads()
    except SQLAlchemyError as error:
        raise unreachable(engine, error) from error
    return Upgraded(before, after[0], adopted)


def _incremental_vacuum_when_new(engine: Engine) -> None:
    """A new SQLite file is made with ``auto_vacuum=INCREMENTAL``, so the pages retention's purge
    frees go back to the file system in small steps (``store/purge.py``) instead of waiting on
    the freelist. The mode can only be chosen before the first table exists (later it takes a
    whole ``VACUUM``, which copies the file), hence here, ahead of the first revision, while
    the ``VACUUM`` that applies it has nothing to copy."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        (tables,) = driver.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if tables == 0:  # VACUUM applies it: WAL mode has written the header already
            driver.execute("PRAGMA auto_vacuum=INCREMENTAL")
            driver.execute("VACUUM")


def _known(schema: Schema) -> set[str]:
    return {rev.revision for rev in _script(schema.location).walk_revisions()}


def _ahead(schema: Schema, where: str, revision: str) -> SchemaNotCurrent:
    return SchemaNotCurrent(
        f"the {schema.name} store at {where} is at revision {revision}, which this release does "
        f"not know (a newer release upgraded it): run that release, or install it and run "
        f"`{schema.upgrade_command}`; schemas are never downgraded"
    )


def check(engine: Engine, schema: Schema, command: str | None = None) -> None:
    """Refuse (SchemaNotCurrent) a database that is not at this code's newest revision; the
    line names ``command`` (default: the schema's upgrade command) as what to run."""
    if _recorded(engine, schema) == schema.head:
        return  # the usual case, answered without alembic
    where = safe_url(engine)
    run = command or schema.upgrade_command
    now = current(engine, schema)
    newest = head(schema)
    if now == newest:
        return
    if now is None:
        with engine.connect() as conn:
            present = _present(conn, schema)
        state = (
            "was made by the release before migrations"
            if present
            else f"has no {schema.name} tables"
        )
        raise SchemaNotCurrent(f"the {schema.name} store at {where} {state}: run `{run}`")
    if now not in _known(schema):
        raise _ahead(schema, where, now)
    raise SchemaNotCurrent(
        f"the {schema.name} store at {where} is at revision {now}, behind {newest}: run `{run}`"
    )


def _recorded(engine: Engine, schema: Schema) -> str | None:
    """The one revision the version table records, read with plain SQL; None when it records
    none or several, or cannot be read (``check`` then asks alembic, which says why)."""
    try:
        with engine.connect() as conn:
            query: sql.Select[Any] = sql.select(sql.column("version_num")).select_from(
                sql.table(schema.version_table)
            )
            found: list[Any] = list(conn.execute(query).scalars())
    except SQLAlchemyError:
        return None
    return str(found[0]) if len(found) == 1 else None


def lines_of_history(schema: Schema) -> Iterator[str]:
    """``db history``: one revision a line, oldest first, the newest marked (head)."""
    for revision in history(schema):
        mark = " (head)" if revision.head else ""
        yield f"{revision.down or '<base>'} -> {revision.id}{mark}: {revision.message}"
