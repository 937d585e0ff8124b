"""The in-memory job queue answers as the store's does: the same scenarios, run on
``MemoryJobQueue`` and on ``StoreJobQueue`` over a real SQLite file and the real PostgreSQL
server. The worker's unit tests (tests/unit/worker) rely on the twin; this keeps it honest."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from receiver import Context, Notification, Router
from receiver.sources import dedup_key
from receiver.store import Incoming, JobStatus, Store
from receiver.worker.jobs import JobQueue, Outcome, StoreJobQueue
from receiver.worker.memory import MemoryJobQueue
from receiver.worker.routing import Routing
from tests.conftest import fresh_database, migrated

SOURCES = ["pucomex", "sintegre", "invoicy"]


@dataclass
class Inbox:
    """One queue, with what ingest would have stored in it and how to read its rows back."""

    queue: JobQueue
    receive: Callable[[bytes], str]
    note_status: Callable[[str], str]
    jobs_of: Callable[[str], list[tuple[str, int, str | None]]]  # status, attempts, last_error


def memory_inbox() -> Inbox:
    queue = MemoryJobQueue()
    return Inbox(
        queue,
        lambda body: queue.receive("pucomex", body),
        lambda note_id: queue.notes[note_id].status,
        lambda note_id: sorted(
            (job.status, job.attempts, job.last_error) for job in queue.jobs_of(note_id)
        ),
    )


def store_inbox(store: Store) -> Inbox:
    def receive(body: bytes) -> str:
        item = Incoming("pucomex", None, "203.0.113.7", {}, body, dedup_key("pucomex", body))
        return store.append_now([item])[0].id

    def note_status(note_id: str) -> str:
        row = store.note(note_id)
        assert row is not None
        return str(row["status"])

    return Inbox(
        StoreJobQueue(store),
        receive,
        note_status,
        lambda note_id: sorted(
            (job["status"], job["attempts"], job["last_error"]) for job in store.jobs_of(note_id)
        ),
    )


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Inbox]:
    if request.param == "memory":
        yield memory_inbox()
        return
    store = Store(fresh_database(request.param, tmp_path))
    migrated(store)
    try:
        yield store_inbox(store)
    finally:
        store.close()


def routing(*events: str) -> Routing:
    router = Router()

    async def first(note: Notification, ctx: Context) -> None:
        return None

    async def second(note: Notification, ctx: Context) -> None:
        return None

    router.on("pucomex", *events)(first)
    router.on("pucomex", *events)(second)
    return Routing([router], SOURCES)


def body(numero: int, event: str = "duimp.registro") -> bytes:
    return json.dumps({"evento": event, "dados": {"numero": str(numero)}}).encode()


def test_plan_gives_each_handler_a_job_or_quarantines(inbox: Inbox) -> None:
    routed = inbox.receive(body(1))
    unrouted = inbox.receive(body(2, "lpco.registro"))
    unreadable = inbox.receive(b"{not json")
    repeat = inbox.receive(body(1))
    assert inbox.queue.plan(routing("duimp.registro"), 100) == 3  # the receipt is not planned
    assert inbox.queue.plan(routing("duimp.registro"), 100) == 0
    assert inbox.jobs_of(routed) == [("pending", 0, None)] * 2
    assert [inbox.note_status(n) for n in (routed, unrouted, unreadable, repeat)] == [
        "pending",
        "quarantined",
        "quarantined",
        "duplicate",
    ]
    assert inbox.jobs_of(unrouted) == inbox.jobs_of(repeat) == []


def test_a_claimed_job_is_leased_and_fenced_once_its_lease_is_lost(inbox: Inbox) -> None:
    note = inbox.receive(body(1))
    inbox.queue.plan(routing("duimp.registro"), 100)
    # A lease long enough for the next two claims on a busy machine (0.05 s was not, with the
    # PostgreSQL server sharing two cores with other test runs).
    first = inbox.queue.claim(1, lease_seconds=1.0)
    [job] = first
    assert (job.attempt, job.note_id, job.event, job.body) == (1, note, "duimp.registro", body(1))
    assert len(inbox.queue.claim(10, lease_seconds=30)) == 1  # the other handler's job
    assert inbox.queue.claim(10, lease_seconds=30) == []  # leased: nobody else gets them
    time.sleep(1.1)
    [again] = inbox.queue.claim(10, lease_seconds=30)
    assert (again.job_id, again.attempt) == (job.job_id, 2)
    # The first owner's lease was lost: its outcome and its release change nothing.
    assert inbox.queue.finish_many([Outcome(job, JobStatus.DONE)]) == [False]
    inbox.queue.release([job])
    assert inbox.queue.finish_many([Outcome(again, JobStatus.DONE)]) == [True]
    assert ("done", 2, None) in inbox.jobs_of(note)


def test_a_release_does_not_count_the_attempt(inbox: Inbox) -> None:
    note = inbox.receive(body(1))
    inbox.queue.plan(routing("duimp.registro"), 100)
    claimed = inbox.queue.claim(10, lease_seconds=30)
    inbox.queue.release(claimed)
    assert inbox.jobs_of(note) == [("pending", 0, None)] * 2
    assert [job.attempt for job in inbox.queue.claim(10, lease_seconds=30)] == [1, 1]


def test_a_failed_attempt_waits_its_delay_and_the_note_follows_its_jobs(inbox: Inbox) -> None:
    note = inbox.receive(body(1))
    inbox.queue.plan(routing("duimp.registro"), 100)
    one, two = inbox.queue.claim(10, lease_seconds=30)
    assert inbox.queue.finish_many(
        [Outcome(one, JobStatus.FAILED, "ValueError: no", 0.2), Outcome(two, JobStatus.DONE)]
    ) == [True, True]
    assert inbox.note_status(note) == "failed"
    assert inbox.queue.claim(10, lease_seconds=30) == []  # not due yet
    time.sleep(0.3)
    [retried] = inbox.queue.claim(10, lease_seconds=30)
    assert (retried.job_id, retried.attempt) == (one.job_id, 2)
    inbox.queue.finish_many([Outcome(retried, JobStatus.DEAD, "GiveUp: never")])
    assert inbox.note_status(note) == "dead"  # dead beats done
    assert inbox.jobs_of(note) == [("dead", 2, "GiveUp: never"), ("done", 1, None)]


def test_all_jobs_done_is_a_done_notification(inbox: Inbox) -> None:
    note = inbox.receive(body(1))
    inbox.queue.plan(routing("duimp.registro"), 100)
    claimed = inbox.queue.claim(10, lease_seconds=30)
    inbox.queue.finish_many([Outcome(claimed[0], JobStatus.DONE)])
    assert inbox.note_status(note) == "pending"
    inbox.queue.finish_many([Outcome(claimed[1], JobStatus.DONE)])
    assert inbox.note_status(note) == "done"


def test_only_an_abandoned_last_attempt_is_buried(inbox: Inbox) -> None:
    note = inbox.receive(body(1))
    inbox.queue.plan(routing("duimp.registro"), 100)
    for _ in range(2):  # attempts 1 and 2 of 2, each abandoned by a worker that died
        assert len(inbox.queue.claim(1, lease_seconds=0.01)) == 1
        time.sleep(0.05)
    assert inbox.queue.bury_abandoned(max_attempts=3) == 0  # not its last attempt yet
    assert inbox.queue.bury_abandoned(max_attempts=2) == 1
    assert inbox.note_status(note) == "dead"
    statuses = inbox.jobs_of(note)
    assert ("dead", 2, "worker lost (crash or kill) during the last allowed attempt") in statuses
    assert ("pending", 0, None) in statuses  # the other handler's job was never claimed


def test_counts_by_status_and_the_oldest_waiting(inbox: Inbox) -> None:
    assert inbox.queue.counts() == ({}, 0.0)
    inbox.receive(body(1))
    inbox.queue.plan(routing("duimp.registro"), 100)
    inbox.queue.claim(1, lease_seconds=30)
    time.sleep(0.05)
    counts, oldest = inbox.queue.counts()
    assert counts == {"pending": 1, "running": 1}
    assert 0.05 <= oldest < 10


def test_outcomes_settled_together_are_fenced_one_by_one(inbox: Inbox) -> None:
    """One transaction settles a group of outcomes: each is still judged by its own lease, and a
    second outcome for the same attempt in the same group is refused, not applied on top."""
    notes = [inbox.receive(body(n)) for n in range(3)]
    inbox.queue.plan(routing("duimp.registro"), 100)
    claimed = inbox.queue.claim(10, lease_seconds=30)
    assert len(claimed) == 6
    stale = inbox.queue.claim(10, lease_seconds=30)  # nothing left: every job is leased
    assert stale == []
    first, *others = claimed
    kept = inbox.queue.finish_many(
        [Outcome(first, JobStatus.DONE), Outcome(first, JobStatus.FAILED, "late", 60)]
        + [Outcome(job, JobStatus.FAILED, "boom", 60) for job in others]
    )
    assert kept == [True, False] + [True] * len(others)
    assert (
        sorted(status for note in notes for status, _, _ in inbox.jobs_of(note))
        == ["done"] + ["failed"] * 5
    )
    assert sorted(inbox.note_status(note) for note in notes) == ["failed"] * 3
