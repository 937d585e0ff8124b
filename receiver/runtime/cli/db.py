"""``receiver db upgrade|current|history``: the receiver store's schema (alembic, run from code).

``db upgrade`` is the only command that changes tables: run it as the database's owner before
``serve`` and ``worker`` (which run as a role without DDL rights and refuse a schema that is not
current). ``schema_commands`` makes the same group for the dispatcher's schema
(``receiver dispatcher db``), which keeps its own history.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from sqlalchemy import Engine

from receiver.errors import SchemaNotCurrent
from receiver.runtime.cliutil import config_option, friendly_errors, settings_for
from receiver.store import make_engine
from receiver.store.engine import check_reachable, safe_url
from receiver.store.migrate import Schema, check, current, head, lines_of_history, upgrade
from receiver.store.schema import RECEIVER_SCHEMA

# The engine a command works on, from its --config (None: $RECEIVER_CONFIG, else the defaults).
EngineFor = Callable[[click.Context, Path | None], Engine]


def schema_commands(schema: Schema, engine_for: EngineFor, help_text: str) -> click.Group:
    """The ``upgrade``, ``current`` and ``history`` commands of one schema, as a group."""

    @click.group(name="db", help=help_text)
    def group() -> None:
        pass

    @group.command(name="upgrade")
    @config_option
    @click.pass_context
    @friendly_errors
    def upgrade_command(ctx: click.Context, config_path: Path | None) -> None:
        """Create or upgrade the tables to this release's revision (as the database's owner).

        A database made by the release before migrations is checked and adopted: nothing in it
        is lost."""
        engine = engine_for(ctx, config_path)
        try:
            check_reachable(engine)
            click.echo(upgrade(engine, schema).summary(schema, safe_url(engine)))
        finally:
            engine.dispose()

    @group.command(name="current")
    @config_option
    @click.pass_context
    @friendly_errors
    def current_command(ctx: click.Context, config_path: Path | None) -> None:
        """The revision the store is at, and whether it is this release's (exit 1 if not)."""
        engine = engine_for(ctx, config_path)
        try:
            check_reachable(engine)
            at = current(engine, schema)
            newest = head(schema)
            if at == newest:
                click.echo(f"{at} (head)")
                return
            try:
                check(engine, schema)
            except SchemaNotCurrent as error:  # said as the state; exit 1 for scripts to test
                click.echo(f"{at or '<none>'}: {error}")
                ctx.exit(1)
        finally:
            engine.dispose()

    @group.command(name="history")
    def history_command() -> None:
        """The revisions this release knows, oldest first."""
        for line in lines_of_history(schema):
            click.echo(line)

    return group


def _receiver_engine(_ctx: click.Context, config_path: Path | None) -> Engine:
    settings = settings_for(config_path)
    return make_engine(settings.database_url, origin=settings.origin)


db = schema_commands(
    RECEIVER_SCHEMA,
    _receiver_engine,
    "The receiver store's schema: upgrade it (as the database's owner), or see where it is.",
)
