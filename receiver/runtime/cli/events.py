"""``receiver events``: the event catalog, with the aliases of receiver.yaml."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from receiver.catalog import catalog_rows
from receiver.runtime.cliutil import config_option, friendly_errors, settings_for


@click.command()
@config_option
@click.option("--source", default=None, help="Only this source's events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@friendly_errors
def events(config_path: Path | None, source: str | None, as_json: bool) -> None:
    """The event catalog: each id, whether it is published or provisional, and the aliases of
    receiver.yaml (events.aliases)."""
    settings = settings_for(config_path)
    rows = list(catalog_rows(settings.events.aliases, source))
    if not rows:
        raise click.UsageError(f"no catalog or alias for source {source!r}")
    out = sys.stdout
    for row in rows:
        if as_json:
            out.write(json.dumps(row.public(), ensure_ascii=False) + "\n")
        else:
            shown = f"{row.id} -> {row.alias_of}" if row.alias_of else row.id
            out.write(f"{row.source:<9} {shown:<46} {row.status:<12} {row.description}\n")
    out.flush()
