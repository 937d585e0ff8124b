"""``receiver demo``: the whole system end to end on this machine."""

from __future__ import annotations

import asyncio
import sys

import click

from receiver import logs
from receiver.runtime.cliutil import friendly_errors


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
    from receiver.demo import run_demo, summary

    logs.configure("WARNING", [])
    report = asyncio.run(run_demo(duimps, say=click.echo))
    click.echo("")
    click.echo(summary(report))
    sys.exit(0 if report.ok else 1)
