"""``receiver dispatcher`` (serve the Portal's side, emit events, SINtegre's operator actions)
and ``receiver demo``: the commands that run the Portal simulator.

    receiver dispatcher [--config FILE] [--host H] [--port P]     serve (API + sender + Portal API)
    receiver dispatcher emit EVENT --json FILE [--raw] [--no-wait]
    receiver dispatcher resend-pending SUBSCRIPTION_ID [--no-wait]
    receiver dispatcher send-latest SUBSCRIPTION_ID [--no-wait]
    receiver dispatcher db upgrade|current|history [--config FILE]
    receiver demo [--duimps N]
    receiver dev --handlers MODULE [--event ID]... [--folder DIR]

The actions store their deliveries in the outbox first. By default they then send them from this
process and wait for the outcome (exit 1 if any delivery failed); with ``--no-wait`` they only
store, and a running ``receiver dispatcher`` sends them within ``poll_seconds``.

The receiver's command group names these commands by import string and loads this module only
when one of them runs, so nothing of the receiver imports the simulator. ``receiver dispatcher``
needs no extra; ``receiver demo`` needs trustme (the ``simulator`` extra) for its certificates.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import uvicorn
from sqlalchemy import Engine

from receiver import logs
from receiver.dispatcher.config import DispatcherSettings, load_dispatcher_config
from receiver.dispatcher.records import DeliveryState
from receiver.dispatcher.schema import DISPATCH_SCHEMA
from receiver.dispatcher.store import DispatchStore
from receiver.errors import ConfigError
from receiver.runtime.cli.db import schema_commands
from receiver.runtime.cliutil import config_option, friendly_errors
from receiver.store import make_engine


def _settings(ctx: click.Context, config_path: Path | None) -> DispatcherSettings:
    group_path = ctx.find_root().meta.get("dispatcher.config_path")
    path = config_path or group_path
    config = load_dispatcher_config(path)
    logs.configure(config.log_level, config.secrets)
    return config.settings


@click.group(invoke_without_command=True)
@config_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=int)
@click.pass_context
@friendly_errors
def dispatcher(ctx: click.Context, config_path: Path | None, host: str, port: int) -> None:
    """The outbound dispatcher: the Portal's subscription API, its sender and API simulator."""
    ctx.find_root().meta["dispatcher.config_path"] = config_path
    if ctx.invoked_subcommand is not None:
        return
    from receiver.dispatcher.server import dispatcher_ssl_context, uvicorn_config
    from receiver.simulator.app import create_simulator_app

    settings = _settings(ctx, config_path)
    store = DispatchStore(settings.database_url)
    try:
        # A wrong database URL or a schema not upgraded is one line here, not a lifespan traceback.
        store.check_schema()
    finally:
        store.close()
    app = create_simulator_app(settings)
    try:
        ssl_context = dispatcher_ssl_context(settings)
    except (OSError, ValueError) as error:
        raise ConfigError(f"dispatcher TLS files: {error}") from error
    uvicorn.Server(
        uvicorn_config(app, host=host, port=port, ssl_context=ssl_context, lifespan="on")
    ).run()


def _report(states: list[DeliveryState]) -> int:
    for state in states:
        click.echo(
            f"delivery {state.id}: {state.status} after {state.attempts} attempt(s) "
            f"(subscription {state.subscription_id}, {state.evento})"
        )
    return 0 if all(state.status == "delivered" for state in states) else 1


def _run(
    settings: DispatcherSettings, wait: bool, action: Callable[[Any], Awaitable[list[int]]]
) -> None:
    from receiver.dispatcher.sender import Dispatcher

    store = DispatchStore(settings.database_url)
    try:
        store.check_schema()  # one line naming `receiver dispatcher db upgrade`, exit 2
    finally:
        store.close()

    async def main() -> int:
        sender = Dispatcher(settings)
        try:
            # Without --wait the outbox is only written: a running dispatcher sends.
            await sender.start(deliver=wait)
            ids = await action(sender)
            if not ids:
                click.echo("nothing to send")
                return 0
            if not wait:
                click.echo(f"stored {len(ids)} deliveries: {', '.join(map(str, ids))}")
                return 0
            interval = settings.interval_seconds
            click.echo(
                f"sending {len(ids)} deliveries (up to {settings.attempts} attempts, "
                f"{interval:g} s apart; --no-wait leaves them to a running dispatcher)",
                err=True,
            )
            return _report(await sender.wait_for(ids))
        finally:
            await sender.close()

    sys.exit(asyncio.run(main()))


@dispatcher.command()
@config_option
@click.argument("evento")
@click.option(
    "--json",
    "json_file",
    required=True,
    type=click.File("rb"),
    help="The event's data ('dados') as a JSON object; '-' reads stdin.",
)
@click.option("--raw", is_flag=True, help="Send the file's bytes as the whole body, unchanged.")
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.pass_context
@friendly_errors
def emit(
    ctx: click.Context,
    config_path: Path | None,
    evento: str,
    json_file: Any,
    raw: bool,
    wait: bool,
) -> None:
    """Emit EVENTO to every subscription of it: {"evento", "dataHora", "dados": FILE}."""
    from receiver.dispatcher.sender import Dispatcher

    settings = _settings(ctx, config_path)
    content: bytes = json_file.read()
    try:
        dados = json.loads(content)
    except (ValueError, RecursionError):
        raise click.BadParameter("not valid JSON", param_hint="--json") from None
    if not raw and not isinstance(dados, dict):
        raise click.BadParameter(
            "expected a JSON object (the event's 'dados')", param_hint="--json"
        )

    async def action(sender: Dispatcher) -> list[int]:
        if raw:
            result = await sender.emit_body(evento, content)
        else:
            result = await sender.emit(evento, dados)
        click.echo(f"event {result.event_id} ({evento}): {len(result.delivery_ids)} deliveries")
        return list(result.delivery_ids)

    _run(settings, wait, action)


@dispatcher.command("resend-pending")
@config_option
@click.argument("subscription_id", type=click.IntRange(min=1))
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.pass_context
@friendly_errors
def resend_pending(
    ctx: click.Context, config_path: Path | None, subscription_id: int, wait: bool
) -> None:
    """Resend what the subscription still has pending or failed, with fresh attempts."""
    settings = _settings(ctx, config_path)
    _run(settings, wait, lambda sender: sender.resend_pending(subscription_id))


@dispatcher.command("send-latest")
@config_option
@click.argument("subscription_id", type=click.IntRange(min=1))
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.pass_context
@friendly_errors
def send_latest(
    ctx: click.Context, config_path: Path | None, subscription_id: int, wait: bool
) -> None:
    """Send the latest notification of the subscription's event again."""
    settings = _settings(ctx, config_path)
    _run(settings, wait, lambda sender: sender.send_latest(subscription_id))


def _dispatcher_engine(ctx: click.Context, config_path: Path | None) -> Engine:
    return make_engine(_settings(ctx, config_path).database_url)


dispatcher.add_command(
    schema_commands(
        DISPATCH_SCHEMA,
        _dispatcher_engine,
        "The dispatcher store's schema (its own history, apart from the receiver's): upgrade "
        "it, or see where it is.",
    )
)


TRUSTME_MISSING = (
    "receiver demo needs the simulator extra (trustme makes its test certificates): "
    "pip install 'portal-receiver[simulator]'"
)


@click.command()
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
    try:
        from receiver.simulator.demo import run_demo, summary
    except ModuleNotFoundError as missing:
        if missing.name != "trustme":
            raise
        click.echo(f"receiver: {TRUSTME_MISSING}", err=True)
        sys.exit(2)

    logs.configure("WARNING", [])
    report = asyncio.run(run_demo(duimps, say=click.echo))
    click.echo("")
    click.echo(summary(report))
    sys.exit(0 if report.ok else 1)


@click.command()
@click.option(
    "--handlers",
    "modules",
    required=True,
    multiple=True,
    help="A handler module of the current directory (its `router`), or module:attr; repeatable.",
)
@click.option(
    "--event",
    "events",
    multiple=True,
    help="Subscribe to and emit this event id only (repeatable); default: the Portal's catalog "
    "events the handlers run on.",
)
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the databases, certificates and configuration go (kept); default: a new folder "
    "under the system's temporary directory.",
)
@friendly_errors
def dev(modules: tuple[str, ...], events: tuple[str, ...], folder: Path | None) -> None:
    """Run your handlers against the simulated Portal, reloading them when their files change."""
    try:
        from receiver.simulator.dev import main as run_dev
    except ModuleNotFoundError as missing:
        if missing.name != "trustme":
            raise
        click.echo(
            f"receiver: {TRUSTME_MISSING.replace('receiver demo', 'receiver dev')}", err=True
        )
        sys.exit(2)
    import tempfile

    chosen = (folder or Path(tempfile.mkdtemp(prefix="receiver-dev-"))).resolve()
    logs.configure("INFO", [])
    run_dev(list(modules), chosen, list(events), say=click.echo)
