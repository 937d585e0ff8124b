"""What every ``receiver`` subcommand shares: the ``--config`` option, loading the settings and
opening the store, one-line errors, and the group that imports its heavier subcommands only when
they are used.

Kept apart from ``receiver.runtime.cli`` so the subcommand groups (portal, dispatcher, demo) can
import it without importing the command that registers them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from receiver import logs
from receiver.config import CONFIG_ENV, Settings, load_settings
from receiver.errors import (
    ConfigError,
    HandlerError,
    ReceiverError,
    SchemaNotCurrent,
    StoreUnavailable,
)
from receiver.store import Store

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"receiver.yaml to use (default: ${CONFIG_ENV}, else built-in defaults).",
)


class LazyGroup(click.Group):
    """A command group whose listed subcommands are imported when they are used, not before.

    ``receiver serve`` and ``receiver worker`` never need the dispatcher or the Portal client
    (httpx, cryptography, the OpenAPI document); imported up front, they cost every serving
    process about 17 MiB and every command about 0.16 s of imports.
    """

    def __init__(
        self, *args: Any, lazy_subcommands: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        # name -> "module:attribute" of a click command
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_subcommands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


def friendly_errors(command: F) -> F:
    """Turn the package's errors into one line on stderr and a meaningful exit code."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ConfigError, HandlerError) as error:
            # A handler module that cannot be loaded is a configuration error too (exit 2: the
            # units do not restart on it).
            click.echo(f"receiver: configuration error: {error}", err=True)
            sys.exit(2)
        except SchemaNotCurrent as error:
            # Restarting cannot help either: someone must upgrade (or install the newer release).
            click.echo(f"receiver: {error}", err=True)
            sys.exit(2)
        except StoreUnavailable as error:
            click.echo(f"receiver: store unavailable: {error}", err=True)
            sys.exit(3)
        except ReceiverError as error:
            click.echo(f"receiver: {error}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def settings_for(config_path: Path | None) -> Settings:
    """``receiver.yaml`` (from ``--config``, else ``$RECEIVER_CONFIG``), with logging set up from
    it: its level, and its secrets kept out of every line."""
    settings = load_settings(config_path)
    logs.configure(settings.log_level, settings.secrets(), settings.log_format)
    return settings


def open_store(settings: Settings) -> Store:
    """The configured store, its schema current (a command that reads or replays); one line
    saying why not when it cannot be reached or is not upgraded."""
    store = Store.from_settings(settings)
    try:
        store.check_reachable()
        store.check_schema()
    except BaseException:
        store.close()
        raise
    return store
