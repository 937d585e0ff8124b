"""``receiver serve`` and ``receiver worker``: ingest (with, unless --no-worker, an in-process
handler worker), one serving process or ``--workers N``; and handler workers alone."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
import uvicorn

from receiver.config import CONFIG_ENV, Settings
from receiver.ingest.http import ReceiverProtocol, ReloadingSupervisor, uvicorn_config
from receiver.runtime.cliutil import config_option, friendly_errors, settings_for
from receiver.runtime.startup import startup_warnings
from receiver.store import Store

SERVE_NO_WORKER_ENV = "RECEIVER_SERVE_NO_WORKER"


def _ingest_app(settings: Settings, config_path: Path | None, no_worker: bool) -> Any:
    """The app of one serving process; also gives its protocol the edge policy
    (receiver.ingest.edge), and reloads both on SIGHUP (receiver.runtime.reload)."""
    from receiver.ingest.allowlist import Allowlist
    from receiver.ingest.app import create_app
    from receiver.ingest.edge import EdgePolicy
    from receiver.runtime.reload import Reloader
    from receiver.runtime.services import serve_services

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
    return _ingest_app(settings_for(None), None, os.environ.get(SERVE_NO_WORKER_ENV) == "1")


@click.command()
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
    settings = settings_for(config_path)
    for warning in startup_warnings(settings):
        logging.getLogger("receiver.config").warning("%s", warning)
    if workers == 1:
        _tune_interpreter()
        app = _ingest_app(settings, config_path, no_worker)
        uvicorn.Server(uvicorn_config(app, settings.server, host=host, port=port)).run()
        return

    from receiver.runtime.services import build_routing

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
    from receiver.runtime import reload

    config = uvicorn_config(
        "receiver.runtime.cli.serve:serve_app",
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


@click.command()
@config_option
@friendly_errors
def worker(config_path: Path | None) -> None:
    """Run handler workers only (several may share a PostgreSQL store)."""
    from receiver.runtime.services import build_routing, run_worker

    settings = settings_for(config_path)
    routing = build_routing(settings)
    store = Store.from_settings(settings)
    try:
        asyncio.run(run_worker(settings, store, routing))
    finally:
        store.close()
