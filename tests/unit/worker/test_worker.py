"""The worker's logic on the in-memory job queue: what a handler is given, routing, quarantine,
retries, timeouts, a graceful stop, a handler gone. No database: the queue is
``MemoryJobQueue``, which ``tests/integration/worker/test_job_queues.py`` holds to the store's
behaviour; the worker against the real stores is ``tests/integration/worker/test_worker.py``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from receiver import Context, Notification, Retry, Router
from receiver.config import WorkerSettings
from receiver.sources import dedup_key
from receiver.worker.jobs import ClaimedJob
from receiver.worker.memory import MemoryJobQueue, MemoryResults
from receiver.worker.retry import RetryPolicy
from receiver.worker.routing import Routing
from receiver.worker.worker import Worker

pytestmark = pytest.mark.anyio

SOURCES = ["pucomex", "sintegre", "invoicy"]
FAST = WorkerSettings(poll_interval_seconds=0.02, handler_timeout_seconds=5)
THREE_TRIES = RetryPolicy(max_attempts=3, backoff_seconds=0.01, jitter=0)


def duimp(numero: str, event: str = "duimp.registro") -> bytes:
    document = {"evento": event, "dataHora": "2026-11-22T10:00:00Z", "dados": {"numero": numero}}
    return json.dumps(document).encode()


def worker_on(
    queue: MemoryJobQueue,
    *routers: Router,
    results: MemoryResults | None = None,
    retry: RetryPolicy = THREE_TRIES,
) -> Worker:
    return Worker(
        queue,
        Routing(list(routers), SOURCES),
        results=results if results is not None else MemoryResults(),
        settings=FAST,
        retry=retry,
    )


@asynccontextmanager
async def working(worker: Worker) -> AsyncIterator[Worker]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace_seconds=1))
    try:
        yield worker
    finally:
        stop.set()
        await task


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_handler_gets_the_notification_and_keeps_results() -> None:
    router = Router()
    seen: list[Notification] = []

    @router.on("pucomex", "duimp.registro")
    async def fetch(note: Notification, ctx: Context) -> None:
        seen.append(note)
        await ctx.save("duimp", note.idempotency_key, {"numero": note.payload["dados"]["numero"]})
        assert await ctx.load("duimp", note.idempotency_key) == {"numero": "1"}

    queue, results = MemoryJobQueue(), MemoryResults()
    note_id = queue.receive("pucomex", duimp("1"), headers={"x-test": "1"})
    async with working(worker_on(queue, router, results=results)):
        await until(lambda: queue.notes[note_id].status == "done")
    [note] = seen
    assert note.id == note_id
    assert note.event == "duimp.registro"
    assert note.payload["dados"]["numero"] == "1"
    assert note.headers == {"x-test": "1"}
    assert note.idempotency_key == dedup_key("pucomex", duimp("1"))
    assert await results.load("duimp", note.idempotency_key) == {"numero": "1"}


async def test_several_handlers_and_wildcards() -> None:
    router = Router()
    calls: list[str] = []

    @router.on("pucomex", "lpco.*")
    async def any_lpco(note: Notification, ctx: Context) -> None:
        calls.append(f"lpco:{note.event}")

    @router.on_any("pucomex")
    async def audit(note: Notification, ctx: Context) -> None:
        calls.append(f"audit:{note.event}")

    queue = MemoryJobQueue()
    note_id = queue.receive("pucomex", b'{"evento": "lpco.registro"}')
    async with working(worker_on(queue, router)):
        await until(lambda: queue.notes[note_id].status == "done")
    assert sorted(calls) == ["audit:lpco.registro", "lpco:lpco.registro"]
    assert len(queue.jobs_of(note_id)) == 2


async def test_duplicates_run_nothing() -> None:
    router = Router()
    calls: list[str] = []

    @router.on("pucomex", "duimp.registro")
    async def once(note: Notification, ctx: Context) -> None:
        calls.append(note.id)

    queue = MemoryJobQueue()
    first, second = queue.receive("pucomex", duimp("7")), queue.receive("pucomex", duimp("7"))
    assert queue.notes[second].duplicate_of == first
    async with working(worker_on(queue, router)):
        await until(lambda: queue.notes[first].status == "done")
        await asyncio.sleep(0.05)
    assert calls == [first]
    assert queue.jobs_of(second) == []
    assert queue.notes[second].status == "duplicate"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[" * 5000 + b"]" * 5000, "nested"),
        (b'{"evento": "duimp.registro", "n": ' + b"9" * 5000 + b"}", "acceptable JSON"),
        (b'{"evento": "duimp.registro", "v": NaN}', "NaN"),
        (b'{"evento": "a", "evento": "b"}', "repeats"),
        (b'{"dados": {}}', "no event"),
        (b'{"evento": "lpco.registro"}', "no handler"),
    ],
)
async def test_unreadable_or_unroutable_is_quarantined(body: bytes, reason: str) -> None:
    router = Router()

    @router.on("pucomex", "duimp.registro")
    async def never(note: Notification, ctx: Context) -> None:
        raise AssertionError("must not run")

    queue = MemoryJobQueue()
    note_id = queue.receive("pucomex", body)
    async with working(worker_on(queue, router)):
        await until(lambda: queue.notes[note_id].status == "quarantined")
    note = queue.notes[note_id]
    assert note.error is not None and reason in note.error
    assert note.body == body


async def test_a_failing_handler_is_retried_then_dead_lettered_and_hooked() -> None:
    router = Router()
    attempts: list[int] = []
    hooked: list[str] = []

    @router.on("pucomex", "duimp.registro")
    async def broken(note: Notification, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise ValueError("Portal said no")

    @router.on_error
    async def alert(note: Notification, ctx: Context, error: BaseException) -> None:
        hooked.append(type(error).__name__)

    queue = MemoryJobQueue()
    note_id = queue.receive("pucomex", duimp("9"))
    async with working(worker_on(queue, router)):
        await until(lambda: queue.notes[note_id].status == "dead")
    assert attempts == [1, 2, 3]
    assert hooked == ["ValueError"] * 3
    [job] = queue.jobs_of(note_id)
    assert job.status == "dead" and job.last_error is not None
    assert "ValueError: Portal said no" in job.last_error


async def test_retry_request_and_timeout() -> None:
    router = Router()
    asked: list[int] = []

    @router.on("pucomex", "duimp.registro")
    async def later(note: Notification, ctx: Context) -> None:
        asked.append(ctx.attempt)
        if ctx.attempt == 1:
            raise Retry(after=0.05)

    @router.on("pucomex", "duimp.cancelamento", timeout=0.05)
    async def slow(note: Notification, ctx: Context) -> None:
        await asyncio.sleep(5)

    queue = MemoryJobQueue()
    ok = queue.receive("pucomex", duimp("1"))
    stuck = queue.receive("pucomex", duimp("2", "duimp.cancelamento"))
    two_tries = RetryPolicy(max_attempts=2, backoff_seconds=0.01, jitter=0)
    async with working(worker_on(queue, router, retry=two_tries)):
        await until(lambda: (queue.notes[ok].status, queue.notes[stuck].status) == ("done", "dead"))
    assert asked == [1, 2]
    [job] = queue.jobs_of(stuck)
    assert job.attempts == 2
    assert job.last_error is not None and "timed out after 0.05 s" in job.last_error


async def test_graceful_stop_releases_unfinished_jobs() -> None:
    router = Router()
    started = asyncio.Event()

    @router.on("pucomex", "duimp.registro")
    async def blocked(note: Notification, ctx: Context) -> None:
        started.set()
        await asyncio.sleep(60)

    queue = MemoryJobQueue()
    note_id = queue.receive("pucomex", duimp("1"))
    worker = worker_on(queue, router)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace_seconds=0.1))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    [job] = queue.jobs_of(note_id)
    assert (job.status, job.attempts, job.lease_until) == ("pending", 0, None)


async def test_missing_handler_is_a_dead_letter_with_advice() -> None:
    router = Router()

    @router.on("pucomex", "duimp.registro")
    async def gone(note: Notification, ctx: Context) -> None:
        return None

    queue = MemoryJobQueue()
    note_id = queue.receive("pucomex", duimp("1"))
    queue.plan(Routing([router], SOURCES), 100)
    async with working(worker_on(queue, Router())):
        await until(lambda: queue.notes[note_id].status == "dead")
    [job] = queue.jobs_of(note_id)
    assert job.last_error is not None and "not configured any more" in job.last_error
    # The attempt that could not run is recorded as dead, with the reason.
    [row] = queue.attempts_of(note_id)
    assert (row["outcome"], row["error_type"], row["traceback"]) == (
        "dead",
        "HandlerNotConfigured",
        None,
    )
    assert "not configured any more" in str(row["message"])


class CountingQueue(MemoryJobQueue):
    """The in-memory queue, noting how many jobs each claim, or each plan that leases the jobs it
    makes, handed to the worker."""

    def __init__(self) -> None:
        super().__init__()
        self.claimed: list[int] = []

    def claim(self, limit: int, lease_seconds: float) -> list[ClaimedJob]:
        jobs = super().claim(limit, lease_seconds)
        if jobs:
            self.claimed.append(len(jobs))
        return jobs

    def plan_leasing(
        self, routing: Routing, limit: int, lease: int, lease_seconds: float
    ) -> tuple[int, list[ClaimedJob]]:
        planned, jobs = super().plan_leasing(routing, limit, lease, lease_seconds)
        if jobs:
            self.claimed.append(len(jobs))
        return planned, jobs


async def test_quick_handlers_are_claimed_ahead_of_the_free_slots() -> None:
    router = Router()
    handled: list[str] = []

    @router.on("pucomex", "duimp.registro")
    async def quick(note: Notification, ctx: Context) -> None:
        handled.append(note.id)

    queue = CountingQueue()
    notes = [queue.receive("pucomex", duimp(str(n))) for n in range(300)]
    async with working(worker_on(queue, router)):  # concurrency 8, batch_size 64
        await until(lambda: len(handled) == len(notes))
        await until(lambda: all(queue.notes[n].status == "done" for n in notes))
    assert max(queue.claimed) > FAST.concurrency  # claimed ahead: fewer claims, fewer commits
    assert max(queue.claimed) <= FAST.concurrency + FAST.batch_size
    assert sorted(handled) == sorted(notes)  # each once


async def test_slow_handlers_are_not_claimed_ahead() -> None:
    router = Router()
    running: list[str] = []
    release = asyncio.Event()

    @router.on("pucomex", "duimp.registro")
    async def slow(note: Notification, ctx: Context) -> None:
        running.append(note.id)
        await release.wait()

    queue = CountingQueue()
    notes = [queue.receive("pucomex", duimp(str(n))) for n in range(30)]
    async with working(worker_on(queue, router)):
        await until(lambda: len(running) == FAST.concurrency)
        await asyncio.sleep(0.2)  # ten polls: nothing more is claimed while every slot is busy
        # What another worker process could run is left to it.
        assert sum(queue.claimed) == FAST.concurrency
        release.set()
        await until(lambda: all(queue.notes[n].status == "done" for n in notes))


async def test_a_stop_gives_back_jobs_claimed_ahead_without_running_them() -> None:
    router = Router()
    started: list[str] = []
    gate = asyncio.Event()

    @router.on("pucomex", "duimp.registro")
    async def quick_then_held(note: Notification, ctx: Context) -> None:
        started.append(note.id)
        if len(started) > FAST.concurrency:  # the first round finishes, so the next is claimed
            await gate.wait()  # ahead; then every slot is held

    queue = CountingQueue()
    notes = [queue.receive("pucomex", duimp(str(n))) for n in range(100)]
    worker = worker_on(queue, router)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace_seconds=5))
    await until(lambda: len(started) == 2 * FAST.concurrency)
    assert sum(queue.claimed) > len(started)  # some claimed ahead wait for a slot
    stop.set()
    await asyncio.sleep(0.1)
    gate.set()  # the held handlers finish within the grace; the waiting ones never start
    await asyncio.wait_for(task, 10)
    assert len(started) == 2 * FAST.concurrency
    for note in notes:
        [job] = queue.jobs_of(note)
        if note in started:
            assert (job.status, job.attempts) == ("done", 1)
        else:  # given back, the attempt not counted
            assert (job.status, job.attempts, job.lease_until) == ("pending", 0, None)


async def test_every_attempt_is_recorded_with_its_outcome_and_error() -> None:
    router = Router()

    @router.on("pucomex", "duimp.registro")
    async def later(note: Notification, ctx: Context) -> None:
        if ctx.attempt == 1:
            raise Retry(after=0.01)

    @router.on("pucomex", "duimp.cancelamento", timeout=0.05)
    async def slow(note: Notification, ctx: Context) -> None:
        await asyncio.sleep(5)

    @router.on("pucomex", "duimp.desembaraco")
    async def broken(note: Notification, ctx: Context) -> None:
        raise KeyError("numero")

    queue = MemoryJobQueue()
    ok = queue.receive("pucomex", duimp("1"))
    stuck = queue.receive("pucomex", duimp("2", "duimp.cancelamento"))
    failing = queue.receive("pucomex", duimp("3", "duimp.desembaraco"))
    two_tries = RetryPolicy(max_attempts=2, backoff_seconds=0.01, jitter=0)
    async with working(worker_on(queue, router, retry=two_tries)):
        await until(
            lambda: (
                [queue.notes[n].status for n in (ok, stuck, failing)] == ["done", "dead", "dead"]
            )
        )

    def outcomes(note_id: str) -> list[tuple[object, ...]]:
        return [
            (row["attempt"], row["outcome"], row["error_type"])
            for row in queue.attempts_of(note_id)
        ]

    assert outcomes(ok) == [(1, "retry", "receiver.errors.Retry"), (2, "done", None)]
    assert outcomes(stuck) == [(1, "timeout", "TimeoutError"), (2, "dead", "TimeoutError")]
    assert outcomes(failing) == [(1, "failed", "KeyError"), (2, "dead", "KeyError")]
    first, last = queue.attempts_of(failing)
    assert first["message"] == "'numero'"
    assert isinstance(last["traceback"], str)
    assert 'in broken\n    raise KeyError("numero")' in last["traceback"]
    [timed_out, _] = queue.attempts_of(stuck)
    assert timed_out["message"] == "timed out after 0.05 s"
    for row in queue.attempts_of(ok):
        assert row["started_at"] <= row["finished_at"]  # type: ignore[operator]
