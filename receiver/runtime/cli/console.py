"""``receiver console``: the operator console on its own listener (``console.listen``); and
``receiver console hash-password``, which makes the ``password_hash`` of a ``console.users``
entry."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from receiver.runtime.cliutil import config_option, friendly_errors, open_store, settings_for


@click.group(invoke_without_command=True)
@config_option
@click.option(
    "--listen",
    default=None,
    metavar="HOST:PORT",
    help="Where to serve the console [default: console.listen of receiver.yaml, 127.0.0.1:9470].",
)
@click.pass_context
@friendly_errors
def console(ctx: click.Context, config_path: Path | None, listen: str | None) -> None:
    """Serve the operator console (pages over the store; replays for operators)."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    import uvicorn

    from receiver.console import standalone_app
    from receiver.runtime.admin import bind, listening_on
    from receiver.runtime.consoleportal import portal_view
    from receiver.runtime.serving import checked_listen

    settings = settings_for(config_path)
    if settings.console is None:
        raise click.UsageError(
            f"{settings.origin} has no console: section (users, or a trusted_header)"
        )
    where = checked_listen(listen, "--listen") if listen is not None else settings.console.listen
    store = open_store(settings)
    try:
        sock = bind(where, settings.origin, "console.listen")
        view = portal_view(settings, store)
        app = standalone_app(settings, store, view)
        logging.getLogger("receiver.console").info(
            "receiver console: on http://%s/console/ (store %s)", listening_on(sock), store.safe_url
        )
        config = uvicorn.Config(
            app, log_config=None, access_log=False, proxy_headers=False, lifespan="off"
        )
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    finally:
        store.close()


@console.command("hash-password")
@click.option(
    "--password",
    default=None,
    help="The password (default: asked on the terminal, not echoed; or read from stdin).",
)
def hash_password_command(password: str | None) -> None:
    """Print the argon2 hash of a password, for console.users[].password_hash."""
    from receiver.console import hash_password

    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.UsageError("an empty password")
    click.echo(hash_password(password))
