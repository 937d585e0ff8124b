"""``receiver replay``: run handlers again for stored notifications (``receiver.worker.replay``)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from receiver.runtime.cliutil import config_option, friendly_errors, open_store, settings_for
from receiver.store import Store
from receiver.worker import replay as replays


@click.command()
@config_option
@click.argument("note_ids", nargs=-1)
@click.option("--dead", is_flag=True, help="Run every dead-lettered handler job again.")
@click.option("--quarantined", is_flag=True, help="Route quarantined notifications again.")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Replay notifications received since this day (UTC).",
)
@click.option("--event", default=None, help="With --since: only this event id.")
@click.option(
    "--handler",
    default=None,
    help="With one notification id: run only this handler of it again (its full name, or the "
    "part after the last dot).",
)
@friendly_errors
def replay(
    config_path: Path | None,
    note_ids: tuple[str, ...],
    dead: bool,
    quarantined: bool,
    since: datetime | None,
    event: str | None,
    handler: str | None,
) -> None:
    """Run handlers again for stored notifications, with the same idempotency keys."""
    chosen = sum([bool(note_ids), dead, quarantined, since is not None])
    if chosen != 1:
        raise click.UsageError(
            "give notification ids, or exactly one of --dead, --quarantined, --since"
        )
    if event is not None and since is None:
        raise click.UsageError("--event goes with --since")
    if handler is not None and len(note_ids) != 1:
        raise click.UsageError("--handler goes with one notification id")
    store = open_store(settings_for(config_path))
    try:
        if handler is not None:
            _replay_handler(store, note_ids[0], handler)
        elif note_ids:
            try:
                replayed = replays.replay_notes(store, note_ids)
            except KeyError as missing:
                click.echo(f"receiver: no notification with id {missing.args[0]}", err=True)
                sys.exit(1)
            click.echo(f"replaying {len(replayed)} notification(s): {' '.join(replayed)}")
        elif dead:
            click.echo(f"replaying dead letters of {replays.replay_dead(store)} notification(s)")
        elif quarantined:
            count = replays.replay_matching(store, statuses=["quarantined"])
            click.echo(f"routing {count} quarantined notification(s) again")
        else:
            assert since is not None
            count = replays.replay_matching(store, since=since.replace(tzinfo=UTC), event=event)
            click.echo(f"replaying {count} notification(s) received since {since:%Y-%m-%d}")
        click.echo("a running worker picks them up")
    finally:
        store.close()


def _replay_handler(store: Store, note_id: str, handler: str) -> None:
    try:
        done = replays.replay_handler(store, note_id, handler)
    except KeyError:
        click.echo(f"receiver: no notification with id {note_id}", err=True)
        sys.exit(1)
    except replays.ReplayRefused as refused:
        click.echo(f"receiver: {refused}", err=True)
        sys.exit(1)
    was = done.previous_status + (f": {done.previous_error}" if done.previous_error else "")
    click.echo(
        f"replaying handler {done.handler} of notification {done.note_id} (it was {was}); "
        "its other handlers are left as they are"
    )
