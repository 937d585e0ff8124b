"""``receiver alerts check|list``: the alerts evaluated once (for cron and monitoring), and the
episodes kept in the store."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from receiver.alerts import Episode, episodes
from receiver.runtime.cliutil import config_option, friendly_errors, open_store, settings_for
from receiver.safetext import for_terminal, json_text


@click.group()
def alerts() -> None:
    """Alert rules over the store and the Portal (alerts: in receiver.yaml)."""


def _record(episode: Episode) -> dict[str, object]:
    return {
        "id": episode.id,
        "rule": episode.rule,
        "subject": episode.subject,
        "summary": episode.summary,
        "firing": episode.firing,
        "fired_at": episode.fired_at.isoformat(),
        "seen_at": episode.seen_at.isoformat(),
        "resolved_at": episode.resolved_at.isoformat() if episode.resolved_at else None,
    }


@alerts.command("check")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per firing alert.")
@friendly_errors
def check(config_path: Path | None, as_json: bool) -> None:
    """Evaluate every rule once, record and send what fired or resolved, and print the alerts
    firing: exit 1 when any is, 0 when none (for cron and monitoring)."""
    from receiver.runtime.alerting import check_once

    settings = settings_for(config_path)
    store = open_store(settings)
    try:
        evaluation = asyncio.run(check_once(settings, store))
    finally:
        store.close()
    for episode in evaluation.firing:
        click.echo(json_text(_record(episode)) if as_json else for_terminal(episode.describe()))
    if not as_json:
        for name in evaluation.unknown:
            click.echo(f"not evaluated: {name} (cannot tell now)", err=True)
        for problem in evaluation.sink_failures:
            click.echo(f"not delivered: {for_terminal(problem)}", err=True)
        if not evaluation.firing:
            click.echo("no alert firing")
    sys.exit(1 if evaluation.firing else 0)


@alerts.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--firing", is_flag=True, help="Only the alerts firing now.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@friendly_errors
def list_episodes(config_path: Path | None, as_json: bool, firing: bool, limit: int) -> None:
    """The alert episodes recorded, newest first."""
    settings = settings_for(config_path)
    store = open_store(settings)
    try:
        found = episodes(store, active_only=firing, limit=limit)
    finally:
        store.close()
    for episode in found:
        click.echo(json_text(_record(episode)) if as_json else for_terminal(episode.describe()))
