"""What the console's tests share: password hashes that verify fast, a console: section, stored
notifications and dead letters, and a logged-in client."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
from argon2 import PasswordHasher
from sqlalchemy import insert

from receiver.sources import dedup_key
from receiver.store import JOBS, NOTES, Incoming, Store, utcnow

# The hash names its own cost: these verify in about a millisecond, the same code path as the
# real defaults (hash-password), which take 0.3 s each.
FAST = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
OPERATOR_PASSWORD = "operator-pass-7f3a"
VIEWER_PASSWORD = "viewer-pass-2b9c"
OPERATOR_HASH = FAST.hash(OPERATOR_PASSWORD)
VIEWER_HASH = FAST.hash(VIEWER_PASSWORD)
SESSION_SECRET = "console-session-secret-0123456789abcdef"


def console_section(**overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "users": [
            {"name": "olivia", "password_hash": OPERATOR_HASH, "role": "operator"},
            {"name": "victor", "password_hash": VIEWER_HASH, "role": "viewer"},
        ],
        "session_secret": SESSION_SECRET,
    }
    section.update(overrides)
    return section


def body_of(event: str, numero: str, extra: str = "") -> bytes:
    return json.dumps({"evento": event, "numeroDuimp": numero, "nota": extra}).encode()


def store_notes(store: Store, items: Sequence[tuple[str, str | None, bytes]]) -> list[str]:
    """Store (source, event, body) notifications as ingest would; their ids, in order."""
    receipts = store.append_now(
        [
            Incoming(
                source,
                event,
                "203.0.113.7",
                {"content-type": "application/json"},
                body,
                dedup_key(source, body),
            )
            for source, event, body in items
        ]
    )
    return [receipt.id for receipt in receipts]


def bury(store: Store, note_id: str, handler: str, error: str | None) -> int:
    """A dead-lettered job of ``handler`` for ``note_id``, as the worker leaves one."""
    now = utcnow()
    with store.engine.begin() as conn:
        job_id = conn.execute(
            insert(JOBS)
            .values(
                notification_id=note_id,
                handler=handler,
                status="dead",
                attempts=3,
                next_attempt_at=now,
                last_error=error,
                created_at=now - timedelta(minutes=5),
                updated_at=now,
            )
            .returning(JOBS.c.id)
        ).scalar_one()
        conn.execute(NOTES.update().where(NOTES.c.id == note_id).values(status="dead", routed=True))
    return int(job_id)


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "no CSRF field in the page"
    return found.group(1)


async def log_in(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    page = await client.get("/console/login")
    return await client.post(
        "/console/login",
        data={"csrf": csrf_of(page.text), "name": name, "password": password},
    )
