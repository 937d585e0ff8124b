"""``receiver serve`` and ``receiver worker``: ingest (with, unless --no-worker, an in-process
handler worker), one serving process or ``--workers N``; and handler workers alone."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import click
import uvicorn

from receiver.config import CONFIG_ENV, Settings
from receiver.ingest.http import ReceiverProtocol, ReloadingSupervisor, uvicorn_config
from receiver.runtime import serving
from receiver.runtime.admin import bind, listening_on
from receiver.runtime.cliutil import config_option, friendly_errors, settings_for
from receiver.runtime.startup import startup_warnings
from receiver.store import Store

SERVE_NO_WORKER_ENV = "RECEIVER_SERVE_NO_WORKER"


def _ingest_app(
    settings: Settings,
    config_path: Path | None,
    no_worker: bool,
    admin: socket.socket | None = None,
) -> Any:
    """The app of one serving process; also gives its protocol the edge policy
    (receiver.ingest.edge), and reloads both on SIGHUP (receiver.runtime.reload). Its admin
    listener is on ``admin`` (bound already), or, in ``--workers N``, on a Unix socket for the
    supervisor (receiver.runtime.fleet)."""
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
    store.check_reachable()  # one line saying why not, before uvicorn starts
    listener = (
        serving.admin_service(settings, store, sock=admin)
        if admin is not None
        else serving.serving_process_admin(settings, store)
    )
    services = [*serve_services(settings, store, worker=not no_worker), reloader.service]
    # After the handlers are loaded (a wrong module is the first thing to fix), before uvicorn:
    # a schema that is behind, ahead or missing is one line naming `receiver db upgrade`.
    store.check_schema()
    if listener is not None:
        services.insert(0, listener)  # up first, down last: health checks see the whole drain
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
@click.option(
    "--admin-listen",
    default=None,
    metavar="HOST:PORT",
    help="The admin listener (/healthz, /readyz, /metrics) [default: admin_listen of "
    "receiver.yaml, 127.0.0.1:9464].",
)
@click.option(
    "--ssl-certfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Serve the webhooks over TLS 1.2+ with this PEM certificate (chain); reloaded on SIGHUP.",
)
@click.option(
    "--ssl-keyfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The PEM private key of --ssl-certfile.",
)
@click.option(
    "--migrate",
    is_flag=True,
    help="Run `receiver db upgrade` first: for the embedded default (SQLite, one user), where "
    "the serving process owns its database. Without it, serve refuses a schema not upgraded.",
)
@friendly_errors
def serve(
    config_path: Path | None,
    host: str,
    port: int,
    no_worker: bool,
    workers: int,
    admin_listen: str | None,
    ssl_certfile: Path | None,
    ssl_keyfile: Path | None,
    migrate: bool,
) -> None:
    """Run the ingest app (and, unless --no-worker, an in-process handler worker)."""
    settings = serving.with_command_line(
        settings_for(config_path),
        admin_listen=admin_listen,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    if migrate:
        _upgrade(settings)
    for warning in startup_warnings(settings):
        logging.getLogger("receiver.config").warning("%s", warning)
    admin = bind(settings.admin_listen, settings.origin)
    scheme = "https" if settings.server.ssl_certfile is not None else "http"
    public = f"{scheme}://{host}:{port}" if ":" not in host else f"{scheme}://[{host}]:{port}"
    if workers == 1:
        _tune_interpreter()
        app = _ingest_app(settings, config_path, no_worker, admin)
        _started(settings, admin, public, "in-process worker" if not no_worker else "no worker")
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
    # Checked once here too, so a schema not upgraded is one line, not one per process.
    store = Store.from_settings(settings)
    try:
        store.check_reachable()
        store.check_schema()
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
    supervisor = ReloadingSupervisor(
        config,
        [config.bind_socket()],
        check=lambda: reload.check(config_path, settings.server),
    )
    supervisor_admin = serving.SupervisorAdmin(settings, admin)
    supervisor_admin.start(lambda: [process.pid for process in supervisor.processes])
    _started(
        settings,
        admin,
        public,
        f"{workers} serving processes, " + ("no worker" if no_worker else "a worker in each"),
    )
    try:
        supervisor.run()
    finally:
        supervisor_admin.stop()


def _upgrade(settings: Settings) -> None:
    """``serve --migrate``: what ``receiver db upgrade`` does, before anything is served."""
    from receiver.store.schema import RECEIVER_SCHEMA

    store = Store.from_settings(settings)
    try:
        store.check_reachable()
        told = store.upgrade_schema().summary(RECEIVER_SCHEMA, store.safe_url)
    finally:
        store.close()
    logging.getLogger("receiver.serve").info("%s", told)


def _started(settings: Settings, admin: socket.socket, public: str, worker: str) -> None:
    from receiver.ingest.allowlist import Allowlist

    line = serving.startup_line(
        "serve",
        settings,
        admin=listening_on(admin),
        public=public,
        worker=worker,
        allowlist=Allowlist.load(settings.allowlist),
        handlers=settings.handlers,
    )
    logging.getLogger("receiver.serve").info("%s", line)


@click.command()
@config_option
@click.option(
    "--admin-listen",
    default=None,
    metavar="HOST:PORT",
    help="The worker's admin listener (/healthz, /readyz, /metrics) [default: "
    "worker.admin_listen of receiver.yaml, 127.0.0.1:9465].",
)
@friendly_errors
def worker(config_path: Path | None, admin_listen: str | None) -> None:
    """Run handler workers only (several may share a PostgreSQL store)."""
    from receiver.runtime.services import build_routing, run_worker

    settings = settings_for(config_path)
    if admin_listen is not None:
        section = settings.worker.model_copy(
            update={"admin_listen": serving.checked_listen(admin_listen)}
        )
        settings = settings.model_copy(update={"worker": section})
    routing = build_routing(settings)
    store = Store.from_settings(settings)
    try:
        store.check_reachable()
        store.check_schema()  # one line naming `receiver db upgrade`, exit 2
        admin = bind(settings.worker.admin_listen, settings.origin, "worker.admin_listen")
        logging.getLogger("receiver.worker").info(
            "%s",
            serving.startup_line(
                "worker", settings, admin=listening_on(admin), handlers=settings.handlers
            ),
        )
        asyncio.run(run_worker(settings, store, routing, admin))
    finally:
        store.close()
