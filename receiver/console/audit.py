"""The console's audit log: who did what, when, from where (the ``console_audit`` table)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select

from receiver.store import AUDIT, Store, utcnow

MAX_TARGET = 4000


def record(store: Store, *, who: str, role: str, action: str, target: str, client_ip: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            insert(AUDIT).values(
                at=utcnow(),
                who=who[:200],
                role=role[:16],
                action=action[:40],
                target=target[:MAX_TARGET],
                client_ip=client_ip[:64],
            )
        )


def recent(store: Store, before: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest entries first, ``limit`` of them below id ``before`` (keyset pagination)."""
    query = select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AUDIT.c.id < before)
    with store.reading() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]
