"""What every ``receiver`` subcommand shares: the ``--config`` option and one-line errors.

Kept apart from ``receiver.cli`` so the subcommand groups (portal, dispatcher) can import it
without importing the command that registers them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from receiver.config import CONFIG_ENV
from receiver.errors import ConfigError, ReceiverError, StoreUnavailable

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"receiver.yaml to use (default: ${CONFIG_ENV}, else built-in defaults).",
)


def friendly_errors(command: F) -> F:
    """Turn the package's errors into one line on stderr and a meaningful exit code."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as error:
            click.echo(f"receiver: configuration error: {error}", err=True)
            sys.exit(2)
        except StoreUnavailable as error:
            click.echo(f"receiver: store unavailable: {error}", err=True)
            sys.exit(3)
        except ReceiverError as error:
            click.echo(f"receiver: {error}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
