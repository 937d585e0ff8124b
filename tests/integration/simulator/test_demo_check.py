"""The demo's verdict on kept Duimp records, read from a real SQLite store: it counts what each
handler kept for each stored notification, and a missing record lowers the count."""

from __future__ import annotations

import time
from datetime import timedelta

from receiver import Context, Notification, Router
from receiver.dispatcher import pucomex_body
from receiver.simulator.demo import demo_events, demo_stories
from receiver.simulator.demo_report import (
    REGISTRATION_EVENTS,
    DemoReport,
    kept_duimps,
    latencies,
    moment_key,
    receiver_counts,
)
from receiver.sources import dedup_key
from receiver.store import Incoming, JobStatus, Store
from receiver.store.tables import utcnow
from receiver.worker.jobs import Outcome, StoreJobQueue
from receiver.worker.results import Result, save_results
from receiver.worker.routing import Routing


def save_result(store: Store, kind: str, key: str, value: object) -> None:
    save_results(store, [Result.of(kind, key, value)])


def test_every_kept_record_is_counted_and_a_missing_one_is_not(sqlite_store: Store) -> None:
    events = demo_events(6)
    situations = [(e, d) for e, d in events if e not in REGISTRATION_EVENTS]
    assert len(situations) >= 2  # the mix has situations to find
    now = utcnow()
    # Each event at its own moment, as the simulator emits them (dataEvento differs).
    bodies = [
        (evento, dados, pucomex_body(evento, dados, now + timedelta(seconds=n)))
        for n, (evento, dados) in enumerate(events)
    ]
    stored = sqlite_store.append_now(
        [
            Incoming("pucomex", evento, "127.0.0.1", {}, body, dedup_key("pucomex", body))
            for evento, _, body in bodies
        ]
    )
    assert len(stored) == len(events) and not any(r.duplicate_of for r in stored)
    # A repeat of a situation, stored as a receipt: it must not count twice.
    evento, _, body = next(b for b in bodies if b[0] not in REGISTRATION_EVENTS)
    sqlite_store.append_now(
        [Incoming("pucomex", evento, "127.0.0.1", {}, body, dedup_key("pucomex", body))]
    )

    skipped = next(b for b in reversed(bodies) if b[0] not in REGISTRATION_EVENTS)
    for evento, dados, body in bodies:
        if evento in REGISTRATION_EVENTS:
            key = f"{dados['numero']}:{dados['versao']}"
            save_result(sqlite_store, "duimp", key, {"numeroDeclaracao": dados["numero"]})
        elif body != skipped[2]:
            save_result(
                sqlite_store, "duimp-situacao", dedup_key("pucomex", body), {"situacao": evento}
            )
    assert kept_duimps(sqlite_store) == len(events) - 1

    save_result(sqlite_store, "duimp-situacao", dedup_key("pucomex", skipped[2]), {"x": 1})
    assert kept_duimps(sqlite_store) == len(events)
    # A registration record of another Duimp does not count for this one.
    first = events[0][1]
    save_result(
        sqlite_store, "duimp", f"{first['numero']}:{first['versao']}", {"numeroDeclaracao": "x"}
    )
    assert kept_duimps(sqlite_store) == len(events) - 1

    report = DemoReport()
    received, _ = receiver_counts(sqlite_store, report)
    assert received == len(events) + 1 and report.stored == len(events)
    assert sum(counts[1] for counts in report.by_event.values()) == len(events)


def test_the_stories_use_the_published_ids_and_end_in_a_situation() -> None:
    stories = demo_stories(12)
    ids = {evento for story in stories for evento, _ in story}
    assert ids == {
        "dimp-registro-import",
        "dimp-retifica-import",
        "dimp-situacao-import",
        "dimp-diag-import",
    }
    for story in stories:
        assert story[0][0] == "dimp-registro-import"
        assert story[-1][0] == "dimp-situacao-import"
        assert story[-1][1]["situacaoDuimp"] != "REGISTRADA_AGUARDANDO_CANAL"


def test_latencies_match_each_stored_event_to_its_emit_and_its_jobs(sqlite_store: Store) -> None:
    """emit -> stored pairs each original with the moment its own event was emitted (two
    situation changes of one Duimp version are told apart); stored -> handled runs to its
    last done job; a receipt, or a notification not yet handled, adds nothing."""
    events = demo_events(6)
    report = DemoReport()
    emitted = time.time() - 5.0
    for evento, dados in events:
        key = moment_key(
            evento, str(dados["numero"]), str(dados.get("versao")), dados.get("situacaoDuimp")
        )
        report.emitted_at[key] = emitted
    assert len(report.emitted_at) == len(events)  # every event has a key of its own
    now = utcnow()
    bodies = [(evento, pucomex_body(evento, dados, now)) for evento, dados in events]
    sqlite_store.append_now(
        [
            Incoming("pucomex", evento, "127.0.0.1", {}, body, dedup_key("pucomex", body))
            for evento, body in bodies + bodies[:1]  # and a receipt
        ]
    )
    queue = StoreJobQueue(sqlite_store)
    router = Router()

    @router.on("pucomex", *sorted({evento for evento, _ in events}))
    async def handled(note: Notification, ctx: Context) -> None:
        return None

    queue.plan(Routing([router], ["pucomex"]), 100)
    claimed = queue.claim(100, lease_seconds=30)
    queue.finish_many([Outcome(job, JobStatus.DONE) for job in claimed[1:]])  # one left running
    latencies(sqlite_store, report)
    assert len(report.emit_to_stored) == len(events)
    assert all(4.0 < seconds < 60.0 for seconds in report.emit_to_stored)
    assert len(report.stored_to_handled) == len(events) - 1
    assert all(0.0 <= seconds < 60.0 for seconds in report.stored_to_handled)
