"""Each alert rule against a real store (SQLite file and PostgreSQL), evaluated with a clock the
test moves: it fires once while its condition lasts and resolves when it ends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from receiver.alert_settings import SilenceSettings
from receiver.alerts import Evaluation, Evaluator, PortalFacts, Rule
from receiver.alerts.rules import (
    IngestSilent,
    NewDeadLetters,
    NewQuarantined,
    OldestPending,
    StoreRefusingWrites,
    SubscriptionFailing,
    SubscriptionInactive,
    UnstoredFailures,
)
from receiver.sources import dedup_key
from receiver.store import JOBS, NOTES, Incoming, JobStatus, NoteStatus, Store
from tests.alerts_support import Clock, RecordingSink
from tests.conftest import BOTH_STORES, fresh_database, migrated


@pytest.fixture(params=BOTH_STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store = Store(fresh_database(request.param, tmp_path))
    migrated(store)
    yield store
    store.close()


def note(store: Store, n: int, *, status: str = NoteStatus.PENDING) -> str:
    body = f'{{"n": {n}}}'.encode()
    [receipt] = store.append_now(
        [Incoming("pucomex", "dimp-registro-import", "203.0.113.5", {}, body, dedup_key("p", body))]
    )
    with store.engine.begin() as conn:
        conn.execute(update(NOTES).where(NOTES.c.id == receipt.id).values(status=status))
    return receipt.id


def job(store: Store, note_id: str, status: str, at: datetime, handler: str = "h:f") -> None:
    with store.engine.begin() as conn:
        conn.execute(
            JOBS.insert().values(
                notification_id=note_id,
                handler=handler,
                status=status,
                attempts=1,
                next_attempt_at=at,
                created_at=at,
                updated_at=at,
            )
        )


class Alerts:
    """One rule's evaluator on ``store`` with a recording sink."""

    def __init__(self, store: Store, rule: Rule, clock: Clock) -> None:
        self.sink = RecordingSink()
        self.clock = clock
        self.evaluator = Evaluator(
            store, [rule], [self.sink], clock=clock, write_timeout_seconds=0.3
        )

    def run(self) -> Evaluation:
        return asyncio.run(self.evaluator.evaluate())

    def summaries(self) -> list[str]:
        return [episode.summary for episode in self.run().firing]


def fires_once_then_resolves(alerts: Alerts, *, resolve: Any) -> None:
    """After the evaluation that fired it: more evaluations fire nothing, and once ``resolve``
    ends the condition the alert resolves, each told to the sink once."""
    [(event, rule, subject)] = alerts.sink.sent
    assert event == "fired"
    for _ in range(2):
        alerts.clock.advance(seconds=30)
        again = alerts.run()
        assert again.fired == [] and len(again.firing) == 1
    resolve()
    done = alerts.run()
    assert len(done.resolved) == 1 and done.firing == []
    assert alerts.run().resolved == []
    assert alerts.sink.sent == [("fired", rule, subject), ("resolved", rule, subject)]


def test_new_dead_letters_fire_once_and_resolve_after_a_quiet_window(store: Store) -> None:
    clock = Clock()
    alerts = Alerts(store, NewDeadLetters(store, minutes=60), clock)
    assert alerts.run().firing == []
    first = note(store, 1, status=NoteStatus.DEAD)
    job(store, first, JobStatus.DEAD, clock.now, handler="handlers.duimp:fetch")
    job(store, first, JobStatus.DONE, clock.now, handler="handlers.duimp:other")
    [summary] = alerts.summaries()
    assert "1 new dead letter(s)" in summary and "handlers.duimp:fetch: 1" in summary
    fires_once_then_resolves(alerts, resolve=lambda: clock.advance(minutes=61))


def test_new_quarantined_notifications_fire_once_and_resolve(store: Store) -> None:
    clock = Clock()
    alerts = Alerts(store, NewQuarantined(store, minutes=60), clock)
    note(store, 1, status=NoteStatus.DONE)
    assert alerts.run().firing == []
    note(store, 2, status=NoteStatus.QUARANTINED)
    note(store, 3, status=NoteStatus.QUARANTINED)
    [summary] = alerts.summaries()
    assert "2 notification(s) quarantined" in summary and "pucomex: 2" in summary
    fires_once_then_resolves(alerts, resolve=lambda: clock.advance(minutes=61))


def test_oldest_pending_fires_for_a_stuck_job_or_an_unrouted_notification(store: Store) -> None:
    clock = Clock()
    alerts = Alerts(store, OldestPending(store, minutes=15), clock)
    waiting = note(store, 1)  # not routed: no worker has given it jobs
    assert alerts.run().firing == []
    clock.advance(minutes=17)  # the note was stored just after the clock was read
    [summary] = alerts.summaries()
    assert "16 min old" in summary
    with store.engine.begin() as conn:
        conn.execute(update(NOTES).where(NOTES.c.id == waiting).values(routed=True))
    job(store, waiting, JobStatus.FAILED, clock.now - timedelta(minutes=20))

    def finish() -> None:
        with store.engine.begin() as conn:
            conn.execute(update(JOBS).values(status=JobStatus.DONE))

    fires_once_then_resolves(alerts, resolve=finish)


# Monday 30 November 2026, 10:00 in São Paulo (UTC-3).
MONDAY_10H = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)


def received_at(store: Store, note_id: str, when: datetime) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(NOTES).where(NOTES.c.id == note_id).values(received_at=when))


def test_ingest_silent_within_business_hours_only(store: Store) -> None:
    clock = Clock(MONDAY_10H)
    alerts = Alerts(store, IngestSilent(store, SilenceSettings(minutes=60)), clock)
    # Nothing since the day's hours began at 08:00: two hours of silence.
    [summary] = alerts.summaries()
    assert "no notification received for 120 min" in summary and "nothing ever" in summary
    received_at(store, note(store, 1), clock.now - timedelta(minutes=5))
    resolved = alerts.run()
    assert len(resolved.resolved) == 1 and resolved.firing == []
    clock.advance(minutes=64)
    assert len(alerts.run().fired) == 1  # a new episode: 69 min since the last one
    # From 18:00 the rule cannot tell: the alert stays open overnight...
    clock.now = MONDAY_10H + timedelta(hours=9)
    night = alerts.run()
    assert night.unknown == ["ingest_silent"] and len(night.firing) == 1
    # ...and at 08:30 the next morning it is too early to say either way: still open.
    clock.now = MONDAY_10H + timedelta(hours=22, minutes=30)
    assert len(alerts.run().firing) == 1
    # A notification at 08:40 ends it.
    received_at(store, note(store, 2), MONDAY_10H + timedelta(hours=22, minutes=40))
    clock.now = MONDAY_10H + timedelta(hours=22, minutes=45)
    assert len(alerts.run().resolved) == 1
    assert [event for event, _, _ in alerts.sink.sent] == ["fired", "resolved"] * 2
    # Saturday is not a business day by default.
    clock.now = MONDAY_10H + timedelta(days=5, hours=5)
    assert alerts.run().unknown == ["ingest_silent"]


def test_recovered_notifications_are_not_ingest(store: Store) -> None:
    clock = Clock(MONDAY_10H)
    body = b'{"recovered": true}'
    store.append_now(
        [Incoming("pucomex", None, "portal-recovery", {}, body, dedup_key("p", body), True)]
    )
    with store.engine.begin() as conn:
        conn.execute(update(NOTES).values(received_at=clock.now - timedelta(minutes=1)))
    alerts = Alerts(store, IngestSilent(store, SilenceSettings(minutes=60)), clock)
    assert len(alerts.run().firing) == 1


def hold_write_lock(store: Store, held: threading.Event, release: threading.Event) -> None:
    """Another connection takes the write lock on alert_checks until ``release``."""
    with store.engine.connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("LOCK TABLE alert_checks IN ACCESS EXCLUSIVE MODE"))
        else:
            conn.execute(text("DELETE FROM alert_checks WHERE name = 'nobody'"))
        held.set()
        release.wait(30)


def test_store_refusing_writes_fires_once_kept_in_memory_then_written(store: Store) -> None:
    clock = Clock()
    alerts = Alerts(store, StoreRefusingWrites(store, "test", timeout_seconds=0.3), clock)
    assert alerts.run().firing == []
    held, release = threading.Event(), threading.Event()
    locker = threading.Thread(target=hold_write_lock, args=(store, held, release))
    locker.start()
    try:
        assert held.wait(10)
        first = alerts.run()
        [episode] = first.fired
        assert "the store refuses writes" in episode.summary
        # The store could not take the episode: the sinks were told all the same, once.
        again = alerts.run()
        assert again.fired == [] and len(again.firing) == 1
        assert alerts.sink.sent == [("fired", "store_refusing_writes", "")]
    finally:
        release.set()
        locker.join()
    done = alerts.run()
    assert len(done.resolved) == 1
    assert alerts.sink.sent == [
        ("fired", "store_refusing_writes", ""),
        ("resolved", "store_refusing_writes", ""),
    ]
    # Written once the store took writes again: the episode is in the table, resolved.
    from receiver.alerts import episodes

    [kept] = episodes(store)
    assert kept.rule == "store_refusing_writes" and not kept.firing
    assert kept.fired_sent == {"recording"} and kept.resolved_sent == {"recording"}


def test_ingest_commits_failing_count_as_refusing_writes(store: Store) -> None:
    failing = [True]
    alerts = Alerts(
        store, StoreRefusingWrites(store, "test", commits_failing=lambda: failing[0]), Clock()
    )
    [summary] = alerts.summaries()
    assert "ingest's latest commits failed" in summary
    failing[0] = False
    assert len(alerts.run().resolved) == 1


class Facts:
    def __init__(self) -> None:
        self.facts: PortalFacts | None = PortalFacts(checked_at=datetime.now(UTC))

    async def __call__(self) -> PortalFacts | None:
        return self.facts

    def set(self, **fields: Any) -> None:
        self.facts = PortalFacts(checked_at=datetime.now(UTC), **fields)


HOOK = "https://sefaz.example.gov.br/webhooks/pucomex"


def test_subscription_inactive_per_subscription(store: Store) -> None:
    facts = Facts()
    alerts = Alerts(store, SubscriptionInactive(facts), Clock())
    assert alerts.run().firing == []
    facts.set(not_active=(("dimp-registro-import", HOOK, "cancelled by the Portal: 30 dias"),))
    [summary] = alerts.summaries()
    assert "cancelled by the Portal: 30 dias" in summary and "sync" in summary
    facts.facts = None  # the Portal cannot be asked: the alert stays as it is
    assert alerts.run().resolved == []
    facts.set()
    assert len(alerts.run().resolved) == 1
    subject = f"dimp-registro-import -> {HOOK}"
    assert alerts.sink.sent == [
        ("fired", "subscription_inactive", subject),
        ("resolved", "subscription_inactive", subject),
    ]


def test_subscription_failing_from_the_configured_days(store: Store) -> None:
    facts = Facts()
    alerts = Alerts(store, SubscriptionFailing(facts, days=3), Clock())
    facts.set(streaks={"dimp-registro-import": 2, "dimp-situacao-import": 0})
    assert alerts.run().firing == []
    facts.set(streaks={"dimp-registro-import": 3})
    [summary] = alerts.summaries()
    assert "3 consecutive day(s)" in summary and "27 left" in summary
    facts.set(streaks={"dimp-registro-import": 4})
    assert alerts.run().fired == []
    facts.set(streaks={"dimp-registro-import": 0})
    assert len(alerts.run().resolved) == 1
    assert [e for e, _, _ in alerts.sink.sent] == ["fired", "resolved"]


def test_unstored_failures(store: Store) -> None:
    facts = Facts()
    alerts = Alerts(store, UnstoredFailures(facts), Clock())
    facts.set(unstored={"30112026": 0})
    assert alerts.run().firing == []
    facts.set(unstored={"30112026": 2, "01122026": 1})
    [summary] = alerts.summaries()
    assert "3 notification(s)" in summary and "30112026: 2" in summary
    fires_once = alerts.sink.sent
    assert fires_once == [("fired", "unstored_failures", "")]
    facts.set(unstored={})
    assert len(alerts.run().resolved) == 1


def test_episodes_are_not_mixed_up_between_rules(store: Store) -> None:
    facts = Facts()
    facts.set(streaks={"a": 5}, unstored={"30112026": 1})
    clock = Clock()
    sink = RecordingSink()
    evaluator = Evaluator(
        store, [SubscriptionFailing(facts, 3), UnstoredFailures(facts)], [sink], clock=clock
    )
    assert len(asyncio.run(evaluator.evaluate()).fired) == 2
    facts.set(streaks={"a": 5})
    result = asyncio.run(evaluator.evaluate())
    assert [e.rule for e in result.resolved] == ["unstored_failures"]
    assert [e.rule for e in result.firing] == ["subscription_failing"]
