"""The ``receiver`` command group. Configuration errors print one line and exit 2, never a
traceback (``receiver.runtime.cliutil.friendly_errors``).

Each command group has a module: ``serve`` (``serve``, ``worker``), ``inbox``, ``replay``,
``events``; ``portal``, ``dispatcher`` and ``demo`` are imported only when used (``LazyGroup``),
named here by their import string, so ``serve`` and ``worker`` never load the Portal client, the
dispatcher or the simulator.
"""

from __future__ import annotations

import click

from receiver.runtime.cli.events import events
from receiver.runtime.cli.inbox import inbox
from receiver.runtime.cli.replay import replay
from receiver.runtime.cli.serve import serve, worker
from receiver.runtime.cliutil import LazyGroup


@click.group(
    cls=LazyGroup,
    lazy_subcommands={
        "demo": "receiver.runtime.cli.demo:demo",
        "dispatcher": "receiver.dispatcher.cli:dispatcher",
        "portal": "receiver.runtime.cli.portal:portal",
    },
)
@click.version_option(package_name="portal-receiver")
def main() -> None:
    """Durable webhook receiver for the Portal Único, SINtegre and InvoiCy."""


for command in (serve, worker, inbox, replay, events):
    main.add_command(command)
