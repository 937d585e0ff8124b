"""Everything the console shows about one notification: the row, the receipts of its repeats,
its jobs (with their attempts where the store keeps them) and what its handlers saved."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from receiver.store import JOBS, NOTES, RESULTS, Store

MAX_DUPLICATES = 200
MAX_RESULTS = 100


@dataclass(frozen=True, slots=True)
class NoteDetails:
    note: dict[str, Any]
    headers: dict[str, str]
    body_text: str  # the body as text (undecodable bytes shown as U+FFFD); escaped by the page
    pretty_json: str | None  # indented, when the body is JSON
    duplicates: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    results: list[dict[str, Any]]


def _pretty(body: bytes) -> str | None:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False, sort_keys=False)
    except ValueError:
        return None


def _kinds(store: Store) -> list[str]:
    """The result kinds, by a loose index scan of the primary key (kind, key): one probe per
    kind, however many results there are."""
    kinds: list[str] = []
    with store.reading() as conn:
        while True:
            query = select(func.min(RESULTS.c.kind))
            if kinds:
                query = query.where(RESULTS.c.kind > kinds[-1])
            kind = conn.execute(query).scalar()
            if kind is None:
                return kinds
            kinds.append(str(kind))


def note_details(store: Store, note_id: str) -> NoteDetails | None:
    note = store.note(note_id)
    if note is None:
        return None
    original = note["duplicate_of"] or note["id"]
    with store.reading() as conn:
        duplicates = [
            dict(row)
            for row in conn.execute(
                select(NOTES.c.id, NOTES.c.received_at, NOTES.c.client_ip)
                .where(NOTES.c.duplicate_of == original)
                .order_by(NOTES.c.id)
                .limit(MAX_DUPLICATES)
            ).mappings()
        ]
        jobs = [
            dict(row)
            for row in conn.execute(
                select(JOBS).where(JOBS.c.notification_id == original).order_by(JOBS.c.id)
            ).mappings()
        ]
    # Handlers key what they save by the notification's idempotency key (its dedup key) or id.
    keys = [note["dedup_key"], original]
    results: list[dict[str, Any]] = []
    kinds = _kinds(store)
    if kinds:
        with store.reading() as conn:
            results = [
                dict(row)
                for row in conn.execute(
                    select(RESULTS)
                    .where(RESULTS.c.kind.in_(kinds), RESULTS.c.key.in_(keys))
                    .limit(MAX_RESULTS)
                ).mappings()
            ]
    # Every recorded attempt (job_attempts): when, the outcome, the error and its traceback.
    attempts: dict[int, list[dict[str, Any]]] = {}
    for attempt in store.attempts_of(original):
        attempts.setdefault(attempt["job_id"], []).append(attempt)
    for job in jobs:
        # In the order they ran: a replay starts again from attempt 1.
        job["attempt_list"] = sorted(attempts.get(job["id"], []), key=lambda a: a["id"])
    return NoteDetails(
        note=note,
        headers=json.loads(note["headers"]),
        body_text=note["body"].decode("utf-8", errors="replace"),
        pretty_json=_pretty(note["body"]),
        duplicates=duplicates,
        jobs=jobs,
        results=results,
    )
