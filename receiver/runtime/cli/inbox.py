"""``receiver inbox list|show``: what was received, read from the store, shown safely."""

from __future__ import annotations

import base64
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from receiver.runtime.cliutil import config_option, friendly_errors, open_store, settings_for
from receiver.safetext import for_terminal, json_text
from receiver.store import NoteFilter


@click.group()
def inbox() -> None:
    """What was received, read from the store."""


def _body_fields(body: bytes) -> dict[str, Any]:
    try:
        return {"body": body.decode("utf-8"), "body_base64": False}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode("ascii"), "body_base64": True}


def _public(row: dict[str, Any]) -> dict[str, Any]:
    received: datetime = row["received_at"]
    return {
        "id": row["id"],
        "source": row["source"],
        "event": row["event"],
        "received_at": received.isoformat(),
        "client_ip": row["client_ip"],
        "status": row["status"],
        "duplicate_of": row["duplicate_of"],
        "recovered": row["recovered"],
        "dedup_key": row["dedup_key"],
        "error": row["error"],
        "headers": json.loads(row["headers"]),
        **_body_fields(row["body"]),
    }


def _attempt(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "attempt": row["attempt"],
        "started_at": row["started_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat(),
        "outcome": row["outcome"],
        "error_type": row["error_type"],
        "message": row["message"],
        "traceback": row["traceback"],
    }


@inbox.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--source", default=None)
@click.option("--event", default=None)
@click.option(
    "--status",
    default=None,
    type=click.Choice(["pending", "done", "failed", "dead", "quarantined", "duplicate"]),
)
@click.option("--limit", default=None, type=click.IntRange(min=0))
@friendly_errors
def inbox_list(
    config_path: Path | None,
    as_json: bool,
    source: str | None,
    event: str | None,
    status: str | None,
    limit: int | None,
) -> None:
    """List stored notifications, oldest first (all matches unless --limit)."""
    store = open_store(settings_for(config_path))
    try:
        where = NoteFilter(source=source, event=event, status=status, limit=limit)
        out = sys.stdout
        for row in store.notes(where):
            if as_json:
                out.write(json_text(_public(row)) + "\n")
            else:
                # Every column is escaped, whatever wrote it: an event is the sender's text.
                duplicate = f"dup of {row['duplicate_of']}" if row["duplicate_of"] else ""
                line = (
                    f"{row['id']}  {row['received_at']:%Y-%m-%d %H:%M:%S}  {row['source']:<9} "
                    f"{(row['event'] or '-'):<34} {row['status']:<11} {duplicate}"
                )
                out.write(for_terminal(line) + "\n")
        out.flush()
    finally:
        store.close()


@inbox.command("show")
@config_option
@click.argument("note_id")
@friendly_errors
def inbox_show(config_path: Path | None, note_id: str) -> None:
    """Everything stored about one notification, with its handler jobs and each of their
    attempts (outcome, error, traceback)."""
    store = open_store(settings_for(config_path))
    try:
        row = store.note(note_id)
        if row is None:
            click.echo(f"receiver: no notification with id {note_id}", err=True)
            sys.exit(1)
        shown = _public(row)
        attempts = store.attempts_of(note_id)
        shown["jobs"] = [
            {
                "handler": job["handler"],
                "status": job["status"],
                "attempts": job["attempts"],
                "next_attempt_at": job["next_attempt_at"].isoformat(),
                "last_error": job["last_error"],
                # Each attempt: when, how it ended, and where it failed (the traceback keeps
                # the innermost frames: the handler's file and line).
                "attempt_log": [
                    _attempt(attempt) for attempt in attempts if attempt["job_id"] == job["id"]
                ],
            }
            for job in store.jobs_of(note_id)
        ]
        click.echo(json_text(shown, indent=2))
    finally:
        store.close()


@inbox.command("purge")
@config_option
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@friendly_errors
def inbox_purge(config_path: Path | None, dry_run: bool) -> None:
    """Delete what retention: no longer keeps (serve does it every retention.every_seconds),
    and print how many, per status. Pending and failed notifications are never deleted."""
    from receiver.runtime.retention import purge_now

    settings = settings_for(config_path)
    store = open_store(settings)
    try:
        report = purge_now(store, settings.retention, dry_run=dry_run)
    finally:
        store.close()
    kept = ", ".join(
        f"{status} {days:g} d" for status, days in sorted(settings.retention.by_status().items())
    )
    click.echo(f"retention ({kept or 'everything kept'}):")
    verb = "would delete" if dry_run else "deleted"
    for status in ("done", "duplicate", "dead", "quarantined"):
        click.echo(f"  {verb} {report.notes.get(status, 0):>8} {status}")
    click.echo(f"  {verb} {report.results:>8} handler results")
    if report.pages_returned:
        click.echo(f"  returned {report.pages_returned} free pages of the SQLite file")
