"""The actions: replay a notification, one handler of it, dead letters, quarantined notifications
(``receiver.worker.replay``, as ``receiver replay`` does). A replay of more than one thing goes
through a confirmation page that says how many; every replay is in the audit log. A running
worker picks the replayed jobs up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from receiver.console.web import action, audited, base_path, console_of, render
from receiver.worker import replay as replays

MAX_SELECTION = 500


def _field(request: Request, name: str) -> str | None:
    value = request.state.form.get(name)
    return value if isinstance(value, str) else None


@action
async def replay_note(request: Request) -> Response:
    console = console_of(request)
    note_id = request.path_params["note_id"][:26]
    try:
        originals = await asyncio.to_thread(replays.replay_notes, console.store, [note_id])
    except KeyError:
        return render(request, "missing.html", 404, what=f"notification {note_id}")
    await audited(request, "replay notification", " ".join(originals))
    return RedirectResponse(
        f"{base_path(request)}/notes/{originals[0]}?replayed=1", status_code=303
    )


@action
async def replay_handler(request: Request) -> Response:
    console = console_of(request)
    note_id = request.path_params["note_id"][:26]
    handler = _field(request, "handler") or ""
    try:
        done = await asyncio.to_thread(replays.replay_handler, console.store, note_id, handler)
    except KeyError:
        return render(request, "missing.html", 404, what=f"notification {note_id}")
    except replays.ReplayRefused as refused:  # no such job, or it is running now
        return render(request, "refused.html", 409, reason=str(refused))
    await audited(request, "replay handler", f"{done.note_id} {done.handler}")
    return RedirectResponse(
        f"{base_path(request)}/notes/{done.note_id}?replayed=1", status_code=303
    )


def _dead_filter(request: Request) -> tuple[replays.DeadFilter, str]:
    form = request.state.form
    scope = _field(request, "scope") or "selection"
    if scope == "everything":
        return replays.DeadFilter(), "every dead letter"
    handler = _field(request, "handler")
    error = _field(request, "error")
    if scope == "group":
        which = replays.DeadFilter(
            handler=handler, error=error, without_error=_field(request, "without_error") == "1"
        )
        return which, f"dead letters of {handler}"
    ids = [int(v) for v in form.getlist("job") if isinstance(v, str) and v.isdigit()]
    return replays.DeadFilter(job_ids=ids[:MAX_SELECTION]), f"{len(ids)} selected dead letters"


@action
async def dead_confirm(request: Request) -> Response:
    console = console_of(request)
    which, described = _dead_filter(request)
    count = await asyncio.to_thread(replays.count_dead, console.store, which)
    return _confirmation(request, count, "dead handler job", described, "/dead/replay")


def _confirmation(request: Request, count: int, noun: str, described: str, target: str) -> Response:
    """The page that says how many a replay would start, posting the same form to ``target``."""
    return render(
        request,
        "confirm.html",
        count=count,
        noun=noun,
        described=described,
        target=f"{base_path(request)}{target}",
        fields=[
            (k, v)
            for k, v in request.state.form.multi_items()
            if k != "csrf" and isinstance(v, str)
        ],
    )


@action
async def dead_replay(request: Request) -> Response:
    console = console_of(request)
    which, described = _dead_filter(request)
    notes = await asyncio.to_thread(replays.replay_dead, console.store, which)
    await audited(request, "replay dead letters", f"{described}: {notes} notification(s)")
    return render(
        request,
        "done.html",
        message=f"Replaying {described}: {notes} notification(s). A running worker picks them up.",
    )


def _quarantine_ids(request: Request) -> list[str]:
    form = request.state.form
    return [v[:26] for v in form.getlist("note") if isinstance(v, str)][:MAX_SELECTION]


async def _in_quarantine_group(request: Request, operation: Callable[..., int]) -> int:
    """Count or replay (``replays.count_matching`` or ``replay_matching``, which take the same
    filter) the quarantined notifications of the group the form names."""
    return await asyncio.to_thread(
        operation,
        console_of(request).store,
        statuses=["quarantined"],
        source=_field(request, "source"),
        event=_field(request, "event") or None,
        error=_field(request, "error"),
        without_error=_field(request, "without_error") == "1",
    )


@action
async def quarantine_confirm(request: Request) -> Response:
    scope = _field(request, "scope") or "selection"
    if scope == "group":
        count = await _in_quarantine_group(request, replays.count_matching)
        described = "quarantined notifications of this group"
    else:
        count = len(_quarantine_ids(request))
        described = f"{count} selected quarantined notifications"
    return _confirmation(
        request, count, "quarantined notification", described, "/quarantine/replay"
    )


@action
async def quarantine_replay(request: Request) -> Response:
    console = console_of(request)
    scope = _field(request, "scope") or "selection"
    if scope == "group":
        count = await _in_quarantine_group(request, replays.replay_matching)
        target = f"group {_field(request, 'source')} {_field(request, 'event')}"
    else:
        ids = _quarantine_ids(request)
        try:
            count = len(await asyncio.to_thread(replays.replay_notes, console.store, ids))
        except KeyError as missing:
            return render(request, "missing.html", 404, what=f"notification {missing.args[0]}")
        target = " ".join(ids)
    await audited(request, "route quarantined again", f"{target}: {count}")
    return render(
        request,
        "done.html",
        message=f"Routing {count} quarantined notification(s) again. A running worker picks them up.",
    )
