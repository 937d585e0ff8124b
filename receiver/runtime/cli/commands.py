"""The ``receiver`` command group. Configuration errors print one line and exit 2, never a
traceback (``receiver.runtime.cliutil.friendly_errors``).

Each command group has a module: ``serve`` (``serve``, ``worker``), ``inbox``, ``replay``,
``events``, ``db``; ``alerts``, ``portal``, and ``dispatcher`` and ``demo`` (``receiver.simulator.cli``), are imported
only when used (``LazyGroup``), named here by their import string: ``serve`` and ``worker`` never
load the Portal client, the dispatcher or the simulator, and the receiver imports neither.
"""

from __future__ import annotations

import click

from receiver.runtime.cli.db import db
from receiver.runtime.cli.events import events
from receiver.runtime.cli.inbox import inbox
from receiver.runtime.cli.replay import replay
from receiver.runtime.cli.serve import serve, worker
from receiver.runtime.cliutil import LazyGroup


@click.group(
    cls=LazyGroup,
    lazy_subcommands={
        "alerts": "receiver.runtime.cli.alerts:alerts",
        "console": "receiver.runtime.cli.console:console",
        "demo": "receiver.simulator.cli:demo",
        "dev": "receiver.simulator.cli:dev",
        "dispatcher": "receiver.simulator.cli:dispatcher",
        "portal": "receiver.runtime.cli.portal:portal",
    },
)
@click.version_option(package_name="portal-receiver")
def main() -> None:
    """Durable webhook receiver for the Portal Único, SINtegre and InvoiCy."""


for command in (serve, worker, inbox, replay, events, db):
    main.add_command(command)
