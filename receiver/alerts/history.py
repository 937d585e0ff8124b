"""The alert episodes in the store (``alert_episodes``): reading them for people and the console,
and the evaluator's writes. Synchronous: callers on an event loop run them in a thread.

Writes go through ``EPISODES``' partial unique index (one open episode per rule and subject): an
insert that meets it means another evaluator fired that alert already, and a resolution that
changes no row means another one resolved it; either way this one does not tell the sinks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from receiver.alerts.model import Episode
from receiver.store import ALERT_CHECKS, EPISODES, Store

# What receiver.store.engine sets on every SQLite connection, put back after the probe.
SQLITE_BUSY_MILLISECONDS = 30_000
# How long an evaluator's write waits for a lock before the store counts as refusing it.
WRITE_TIMEOUT_SECONDS = 5.0
# Sinks are tried again for an episode this long after it fired or resolved, not for ever.
DELIVERY_DAYS = 1


def _sent(text: str) -> set[str]:
    return {name for name in text.split(",") if name}


def _text(names: Iterable[str]) -> str:
    return ",".join(sorted(names))


def _episode(row: Any) -> Episode:
    return Episode(
        id=int(row["id"]),
        rule=row["rule"],
        subject=row["subject"],
        summary=row["summary"],
        fired_at=row["fired_at"],
        seen_at=row["seen_at"],
        resolved_at=row["resolved_at"],
        fired_sent=_sent(row["fired_sent"]),
        resolved_sent=_sent(row["resolved_sent"]),
    )


def episodes(store: Store, *, active_only: bool = False, limit: int = 200) -> list[Episode]:
    """The alert episodes, newest first: every one (up to ``limit``), or only those firing."""
    query = select(EPISODES).order_by(EPISODES.c.fired_at.desc(), EPISODES.c.id.desc())
    if active_only:
        query = query.where(EPISODES.c.resolved_at.is_(None))
    with store.reading() as conn:
        return [_episode(row) for row in conn.execute(query.limit(limit)).mappings()]


def open_episodes(store: Store) -> dict[tuple[str, str], Episode]:
    with store.reading() as conn:
        rows = conn.execute(select(EPISODES).where(EPISODES.c.resolved_at.is_(None))).mappings()
        return {(row["rule"], row["subject"]): _episode(row) for row in rows}


def undelivered(store: Store, now: datetime, sinks: Iterable[str]) -> list[Episode]:
    """Episodes of the last ``DELIVERY_DAYS`` that a sink has not been told of yet."""
    wanted = set(sinks)
    since = now - timedelta(days=DELIVERY_DAYS)
    query = select(EPISODES).where(
        or_(EPISODES.c.resolved_at.is_(None), EPISODES.c.resolved_at >= since)
    )
    found: list[Episode] = []
    with store.reading() as conn:
        for row in conn.execute(query).mappings():
            episode = _episode(row)
            told_fired = wanted <= episode.fired_sent or episode.fired_at < since
            told_resolved = episode.resolved_at is None or wanted <= episode.resolved_sent
            if not (told_fired and told_resolved):
                found.append(episode)
    return found


def insert(store: Store, episode: Episode, timeout_seconds: float = WRITE_TIMEOUT_SECONDS) -> bool:
    """Write a new episode (its ``id`` set); False when another evaluator has that alert open."""
    values = {
        "rule": episode.rule,
        "subject": episode.subject,
        "summary": episode.summary,
        "fired_at": episode.fired_at,
        "seen_at": episode.seen_at,
        "resolved_at": episode.resolved_at,
        "fired_sent": _text(episode.fired_sent),
        "resolved_sent": _text(episode.resolved_sent),
    }
    try:
        with writing(store, timeout_seconds) as conn:
            result = conn.execute(EPISODES.insert().values(**values))
    except IntegrityError:
        return False
    primary = result.inserted_primary_key
    assert primary is not None
    episode.id = int(primary[0])
    return True


def save(
    store: Store,
    episode: Episode,
    *,
    resolving: bool = False,
    timeout_seconds: float = WRITE_TIMEOUT_SECONDS,
) -> bool:
    """Write an episode's summary, times and sinks told; with ``resolving``, only if it is still
    open (False when another evaluator resolved it first)."""
    assert episode.id is not None
    statement = (
        update(EPISODES)
        .where(EPISODES.c.id == episode.id)
        .values(
            summary=episode.summary,
            seen_at=episode.seen_at,
            resolved_at=episode.resolved_at,
            fired_sent=_text(episode.fired_sent),
            resolved_sent=_text(episode.resolved_sent),
        )
    )
    if resolving:
        statement = statement.where(EPISODES.c.resolved_at.is_(None))
    with writing(store, timeout_seconds) as conn:
        return conn.execute(statement).rowcount == 1


@contextlib.contextmanager
def writing(store: Store, timeout_seconds: float) -> Iterator[Connection]:
    """A write transaction that waits at most ``timeout_seconds`` for a lock: the store's own
    wait (SQLite's 30 s busy timeout) would hold the evaluator for as long as a stuck lock
    lasts, when an alert about it is what is due. SQLAlchemyError when it cannot."""
    milliseconds = max(1, int(timeout_seconds * 1000))
    with store.engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        raw = conn.connection.dbapi_connection
        assert raw is not None
        if sqlite:
            raw.cursor().execute(f"PRAGMA busy_timeout={milliseconds}")
        try:
            with conn.begin():
                if not sqlite:
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {milliseconds}")
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")
                yield conn
        finally:
            if sqlite:
                raw.cursor().execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MILLISECONDS}")


def record_check(store: Store, name: str, now: datetime, timeout_seconds: float) -> None:
    """Write this evaluation's time (``alert_checks``); raises when the store refuses it."""
    table = ALERT_CHECKS
    with writing(store, timeout_seconds) as conn:
        changed = conn.execute(
            update(table).where(table.c.name == name).values(checked_at=now)
        ).rowcount
        if not changed:
            conn.execute(table.insert().values(name=name, checked_at=now))


def last_check(store: Store, name: str) -> datetime | None:
    with store.reading() as conn:
        found: datetime | None = conn.execute(
            select(ALERT_CHECKS.c.checked_at).where(ALERT_CHECKS.c.name == name)
        ).scalar()
        return found
