"""The ``receiver`` command. Configuration errors print one line and exit 2, never a traceback."""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import uvicorn

from receiver import logs
from receiver.cliutil import LazyGroup, config_option, friendly_errors
from receiver.config import CONFIG_ENV, Settings, load_settings
from receiver.ingest.http import ReceiverProtocol, ReloadingSupervisor, uvicorn_config
from receiver.safetext import for_terminal, json_text
from receiver.startup import startup_warnings
from receiver.store import NoteFilter, Store


def _settings(config_path: Path | None) -> Settings:
    settings = load_settings(config_path)
    logs.configure(settings.log_level, settings.secrets())
    return settings


def _open_store(settings: Settings) -> Store:
    store = Store.from_settings(settings)
    store.create_schema()
    return store


@click.group(
    cls=LazyGroup,
    lazy_subcommands={
        "dispatcher": "receiver.dispatcher.cli:dispatcher",
        "portal": "receiver.portal.cli:portal",
    },
)
@click.version_option(package_name="portal-receiver")
def main() -> None:
    """Durable webhook receiver for the Portal Único, SINtegre and InvoiCy."""


SERVE_NO_WORKER_ENV = "RECEIVER_SERVE_NO_WORKER"


def _ingest_app(settings: Settings, config_path: Path | None, no_worker: bool) -> Any:
    """The app of one serving process; also gives its protocol the edge policy (receiver.ingest.edge),
    and reloads both on SIGHUP (receiver.reload)."""
    from receiver.ingest.allowlist import Allowlist
    from receiver.ingest.app import create_app
    from receiver.ingest.edge import EdgePolicy
    from receiver.reload import Reloader
    from receiver.services import serve_services

    reloader = Reloader(config_path, settings)
    reloader.catch_early()
    allowlist = Allowlist.load(settings.allowlist)
    ReceiverProtocol.configure(EdgePolicy.from_settings(settings, allowlist))
    store = Store.from_settings(settings)
    services = [*serve_services(settings, store, worker=not no_worker), reloader.service]
    app = create_app(settings, store=store, allowlist=allowlist, background=services)
    reloader.admit_with(app.state.ingest.reload)
    return app


def _tune_interpreter() -> None:
    # A writer thread (group_commit.writer: thread) needs the GIL back after every fsync while the
    # event loop holds it for runs of requests; CPython lets a waiting thread in after 5 ms by
    # default. 1 ms gave about 3 % more throughput at 64 connections on SQLite (4 alternating
    # runs), p99 unchanged.
    sys.setswitchinterval(0.001)


def serve_app() -> Any:
    """uvicorn's app factory for ``receiver serve --workers N``: every worker process builds its
    own app and store from what ``serve`` put in the environment ($RECEIVER_CONFIG)."""
    _tune_interpreter()
    return _ingest_app(_settings(None), None, os.environ.get(SERVE_NO_WORKER_ENV) == "1")


@main.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--no-worker", is_flag=True, help="Ingest only; run `receiver worker` elsewhere.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes sharing the port (each with its own group commit). "
    "With SQLite, more than one needs --no-worker.",
)
@friendly_errors
def serve(config_path: Path | None, host: str, port: int, no_worker: bool, workers: int) -> None:
    """Run the ingest app (and, unless --no-worker, an in-process handler worker)."""
    settings = _settings(config_path)
    for warning in startup_warnings(settings):
        logging.getLogger("receiver.config").warning("%s", warning)
    if workers == 1:
        _tune_interpreter()
        app = _ingest_app(settings, config_path, no_worker)
        uvicorn.Server(uvicorn_config(app, settings.server, host=host, port=port)).run()
        return

    from receiver.services import build_routing

    if not no_worker:
        if settings.database_url.startswith("sqlite"):
            raise click.UsageError(
                "--workers above 1 on SQLite serves ingest only: add --no-worker and run one "
                "`receiver worker` beside it (SQLite supports one handler worker process)"
            )
        build_routing(settings)  # a bad handler module fails here, once, not in every process
    # The processes start together: create the tables once here, not racing each other.
    store = Store.from_settings(settings)
    try:
        store.create_schema()
    finally:
        store.close()
    if config_path is not None:
        config_path = config_path.resolve()
        os.environ[CONFIG_ENV] = str(config_path)
    os.environ[SERVE_NO_WORKER_ENV] = "1" if no_worker else "0"
    from receiver import reload

    config = uvicorn_config(
        "receiver.cli:serve_app",
        settings.server,
        host=host,
        port=port,
        factory=True,
        workers=workers,
    )
    # What uvicorn.run does for workers > 1, with SIGHUP passed on instead of restarting them.
    ReloadingSupervisor(
        config, [config.bind_socket()], check=lambda: reload.check(config_path)
    ).run()


@main.group()
def inbox() -> None:
    """What was received, read from the store."""


def _body_fields(body: bytes) -> dict[str, Any]:
    try:
        return {"body": body.decode("utf-8"), "body_base64": False}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode("ascii"), "body_base64": True}


def _public(row: dict[str, Any]) -> dict[str, Any]:
    received: datetime = row["received_at"]
    return {
        "id": row["id"],
        "source": row["source"],
        "event": row["event"],
        "received_at": received.isoformat(),
        "client_ip": row["client_ip"],
        "status": row["status"],
        "duplicate_of": row["duplicate_of"],
        "recovered": row["recovered"],
        "dedup_key": row["dedup_key"],
        "error": row["error"],
        "headers": json.loads(row["headers"]),
        **_body_fields(row["body"]),
    }


@inbox.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--source", default=None)
@click.option("--event", default=None)
@click.option(
    "--status",
    default=None,
    type=click.Choice(["pending", "done", "failed", "dead", "quarantined", "duplicate"]),
)
@click.option("--limit", default=None, type=click.IntRange(min=0))
@friendly_errors
def inbox_list(
    config_path: Path | None,
    as_json: bool,
    source: str | None,
    event: str | None,
    status: str | None,
    limit: int | None,
) -> None:
    """List stored notifications, oldest first (all matches unless --limit)."""
    store = _open_store(_settings(config_path))
    try:
        where = NoteFilter(source=source, event=event, status=status, limit=limit)
        out = sys.stdout
        for row in store.notes(where):
            if as_json:
                out.write(json_text(_public(row)) + "\n")
            else:
                # Every column is escaped, whatever wrote it: an event is the sender's text.
                duplicate = f"dup of {row['duplicate_of']}" if row["duplicate_of"] else ""
                line = (
                    f"{row['id']}  {row['received_at']:%Y-%m-%d %H:%M:%S}  {row['source']:<9} "
                    f"{(row['event'] or '-'):<34} {row['status']:<11} {duplicate}"
                )
                out.write(for_terminal(line) + "\n")
        out.flush()
    finally:
        store.close()


@inbox.command("show")
@config_option
@click.argument("note_id")
@friendly_errors
def inbox_show(config_path: Path | None, note_id: str) -> None:
    """Everything stored about one notification, with its handler jobs."""
    store = _open_store(_settings(config_path))
    try:
        row = store.note(note_id)
        if row is None:
            click.echo(f"receiver: no notification with id {note_id}", err=True)
            sys.exit(1)
        shown = _public(row)
        shown["jobs"] = [
            {
                "handler": job["handler"],
                "status": job["status"],
                "attempts": job["attempts"],
                "next_attempt_at": job["next_attempt_at"].isoformat(),
                "last_error": job["last_error"],
            }
            for job in store.jobs_of(note_id)
        ]
        click.echo(json_text(shown, indent=2))
    finally:
        store.close()


@main.command()
@config_option
@click.option("--source", default=None, help="Only this source's events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@friendly_errors
def events(config_path: Path | None, source: str | None, as_json: bool) -> None:
    """The event catalog: each id, whether it is published or provisional, and the aliases of
    receiver.yaml (events.aliases)."""
    from receiver.catalog import catalog_rows

    settings = _settings(config_path)
    rows = list(catalog_rows(settings.events.aliases, source))
    if not rows:
        raise click.UsageError(f"no catalog or alias for source {source!r}")
    out = sys.stdout
    for row in rows:
        if as_json:
            out.write(json.dumps(row.public(), ensure_ascii=False) + "\n")
        else:
            shown = f"{row.id} -> {row.alias_of}" if row.alias_of else row.id
            out.write(f"{row.source:<9} {shown:<46} {row.status:<12} {row.description}\n")
    out.flush()


@main.command()
@config_option
@friendly_errors
def worker(config_path: Path | None) -> None:
    """Run handler workers only (several may share a PostgreSQL store)."""
    import asyncio

    from receiver.services import build_routing, run_worker

    settings = _settings(config_path)
    routing = build_routing(settings)
    store = Store.from_settings(settings)
    try:
        asyncio.run(run_worker(settings, store, routing))
    finally:
        store.close()


@main.command()
@config_option
@click.argument("note_ids", nargs=-1)
@click.option("--dead", is_flag=True, help="Run every dead-lettered handler job again.")
@click.option("--quarantined", is_flag=True, help="Route quarantined notifications again.")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Replay notifications received since this day (UTC).",
)
@click.option("--event", default=None, help="With --since: only this event id.")
@friendly_errors
def replay(
    config_path: Path | None,
    note_ids: tuple[str, ...],
    dead: bool,
    quarantined: bool,
    since: datetime | None,
    event: str | None,
) -> None:
    """Run handlers again for stored notifications, with the same idempotency keys."""
    from receiver.worker import replay as inbox_jobs

    chosen = sum([bool(note_ids), dead, quarantined, since is not None])
    if chosen != 1:
        raise click.UsageError(
            "give notification ids, or exactly one of --dead, --quarantined, --since"
        )
    if event is not None and since is None:
        raise click.UsageError("--event goes with --since")
    store = _open_store(_settings(config_path))
    try:
        if note_ids:
            try:
                replayed = inbox_jobs.replay_notes(store, note_ids)
            except KeyError as missing:
                click.echo(f"receiver: no notification with id {missing.args[0]}", err=True)
                sys.exit(1)
            click.echo(f"replaying {len(replayed)} notification(s): {' '.join(replayed)}")
        elif dead:
            click.echo(f"replaying dead letters of {inbox_jobs.replay_dead(store)} notification(s)")
        elif quarantined:
            count = inbox_jobs.replay_matching(store, statuses=["quarantined"])
            click.echo(f"routing {count} quarantined notification(s) again")
        else:
            assert since is not None
            count = inbox_jobs.replay_matching(store, since=since.replace(tzinfo=UTC), event=event)
            click.echo(f"replaying {count} notification(s) received since {since:%Y-%m-%d}")
        click.echo("a running worker picks them up")
    finally:
        store.close()


@main.command()
@click.option(
    "--duimps",
    default=20,
    show_default=True,
    type=click.IntRange(1, 500),
    help="How many Duimps the simulated Portal registers (each brings a few events).",
)
@friendly_errors
def demo(duimps: int) -> None:
    """Run the whole system end to end on this machine and print what happened."""
    import asyncio

    from receiver.demo import run_demo, summary

    logs.configure("WARNING", [])
    report = asyncio.run(run_demo(duimps, say=click.echo))
    click.echo("")
    click.echo(summary(report))
    sys.exit(0 if report.ok else 1)
