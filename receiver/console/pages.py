"""The pages that read: overview, inbox, one notification, dead letters, quarantine, audit log,
Portal. Each store read runs in a thread, off the event loop (under ``serve`` that loop is
ingest's)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from receiver.alerts import episodes
from receiver.console import audit, charts, details, letters
from receiver.console.inbox import InboxFilter, inbox_page, older, status_counts
from receiver.console.overview import PORTAL_BUDGET_SECONDS, overview
from receiver.console.web import console_of, page, render
from receiver.errors import ReceiverError
from receiver.store import NoteStatus

STATUSES = [status.value for status in NoteStatus]


def _time(value: str | None, errors: list[str], name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        errors.append(f"{name}: {value!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)")
        return None


def _text(value: str | None, limit: int) -> str | None:
    value = (value or "").strip()
    return value[:limit] or None


def inbox_filter(request: Request, errors: list[str]) -> InboxFilter:
    params = request.query_params
    status = _text(params.get("status"), 16)
    if status is not None and status not in STATUSES:
        errors.append(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        status = None
    before = _text(params.get("before"), 26)
    return InboxFilter(
        source=_text(params.get("source"), 64),
        event=_text(params.get("event"), 120),
        status=status,
        since=_time(params.get("since"), errors, "since"),
        until=_time(params.get("until"), errors, "until"),
        text=_text(params.get("q"), 200),
        before=before.upper() if before else None,
    )


@page
async def inbox(request: Request) -> Response:
    console = console_of(request)
    errors: list[str] = []
    where = inbox_filter(request, errors)
    started = time.perf_counter()
    result, counts = await asyncio.gather(
        asyncio.to_thread(inbox_page, console.store, where),
        asyncio.to_thread(status_counts, console.store),
    )
    took_ms = (time.perf_counter() - started) * 1000
    following = older(where, result)
    return render(
        request,
        "inbox.html",
        where=where,
        page=result,
        counts=counts,
        statuses=STATUSES,
        sources=sorted(console.settings.sources),
        errors=errors,
        older_query=urlencode({**where.as_query(), "before": following.before})
        if following
        else None,
        newest_query=urlencode(where.as_query()),
        took_ms=took_ms,
    )


@page
async def notification(request: Request) -> Response:
    console = console_of(request)
    note_id = request.path_params["note_id"][:26]
    found = await asyncio.to_thread(details.note_details, console.store, note_id)
    if found is None:
        return render(request, "missing.html", 404, what=f"notification {note_id}")
    return render(
        request, "note.html", d=found, handlers=sorted({job["handler"] for job in found.jobs})
    )


@page
async def dead(request: Request) -> Response:
    console = console_of(request)
    groups = await asyncio.to_thread(letters.dead_groups, console.store)
    return render(request, "dead.html", groups=groups)


@page
async def dead_group(request: Request) -> Response:
    console = console_of(request)
    handler = request.query_params.get("handler", "")
    error = request.query_params.get("error")
    jobs = await asyncio.to_thread(letters.dead_jobs, console.store, handler, error)
    return render(request, "dead_group.html", handler=handler, error=error, jobs=jobs)


@page
async def quarantine(request: Request) -> Response:
    console = console_of(request)
    groups = await asyncio.to_thread(letters.quarantine_groups, console.store)
    return render(request, "quarantine.html", groups=groups)


@page
async def quarantine_group(request: Request) -> Response:
    console = console_of(request)
    params = request.query_params
    source = params.get("source", "")
    event = params.get("event") or None
    error = params.get("error")
    notes = await asyncio.to_thread(letters.quarantined, console.store, source, event, error)
    return render(
        request, "quarantine_group.html", source=source, event=event, error=error, notes=notes
    )


@page
async def home(request: Request) -> Response:
    console = console_of(request)
    seen, firing = await asyncio.gather(
        asyncio.to_thread(overview, console.store),
        asyncio.to_thread(episodes, console.store, active_only=True, limit=20),
    )
    hour_chart = charts.bars(
        seen.hour.counts,
        [f"{start:%H:%M}" for start in seen.hour.starts],
        title=seen.hour.title,
        every=10,
    )
    day_chart = charts.bars(
        seen.day.counts,
        [f"{start:%H}h" for start in seen.day.starts],
        title=seen.day.title,
        every=3,
    )
    latency_chart = None
    if seen.latency is not None and seen.latency.observed:
        bounds = [bound for bound, _ in seen.latency.buckets]
        budget_index = next(i for i, b in enumerate(bounds) if b > PORTAL_BUDGET_SECONDS)
        latency_chart = charts.bars(
            [count for _, count in seen.latency.buckets],
            [("≤ " + f"{b:g} s") if b != float("inf") else "> 5 s" for b in bounds],
            title="Acknowledgements by latency",
            marker=(budget_index, "Portal budget 3.5 s"),
            colors=["#2f6fdf" if b <= PORTAL_BUDGET_SECONDS else "#c2410c" for b in bounds],
        )
    return render(
        request,
        "overview.html",
        seen=seen,
        hour_chart=hour_chart,
        day_chart=day_chart,
        latency_chart=latency_chart,
        budget=PORTAL_BUDGET_SECONDS,
        firing=firing,
    )


@page
async def audit_log(request: Request) -> Response:
    console = console_of(request)
    raw = request.query_params.get("before", "")
    before = int(raw) if raw.isdigit() else None
    entries = await asyncio.to_thread(audit.recent, console.store, before)
    return render(request, "audit.html", entries=entries)


@page
async def portal(request: Request) -> Response:
    console = console_of(request)
    if console.portal is None:
        return render(request, "portal.html", snapshot=None, error=None)
    try:
        snapshot = await console.portal.snapshot(7)
    except ReceiverError as error:  # the Portal unreachable or refusing: said on the page
        return render(request, "portal.html", snapshot=None, error=str(error))
    return render(request, "portal.html", snapshot=snapshot, error=None)


@page
async def alerts(request: Request) -> Response:
    """The alert episodes (receiver.alerts): firing ones first, then the latest resolved."""
    console = console_of(request)
    found = await asyncio.to_thread(episodes, console.store, limit=200)
    firing = [episode for episode in found if episode.firing]
    resolved = [episode for episode in found if not episode.firing]
    return render(request, "alerts.html", firing=firing, resolved=resolved)
