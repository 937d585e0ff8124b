"""The job queue and the worker against the real stores: dedup, replay, leases and fencing,
concurrent claimers and settlers, results. The worker's own logic (what a handler is given,
retries, timeouts, a graceful stop) is tested on the in-memory queue: tests/unit/worker."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from receiver import Context, Notification, Router
from receiver.config import Settings
from receiver.runtime.services import build_worker
from receiver.sources import dedup_key
from receiver.store import Incoming, NoteFilter, Store
from receiver.store.grouped import GroupedWrites
from receiver.store.tables import JobStatus
from receiver.worker import planner, replay
from receiver.worker.jobs import Outcome, StoreJobQueue
from receiver.worker.results import Result, StoreResults, save_results
from receiver.worker.routing import Routing
from receiver.worker.worker import Worker
from tests.conftest import BOTH_STORES, fresh_database, migrated

pytestmark = pytest.mark.anyio


def incoming(body: bytes | str, source: str = "pucomex", event: str | None = None) -> Incoming:
    raw = body.encode() if isinstance(body, str) else body
    return Incoming(source, event, "203.0.113.7", {"x-test": "1"}, raw, dedup_key(source, raw))


def duimp(numero: str, event: str = "duimp.registro") -> str:
    return json.dumps(
        {
            "evento": event,
            "dataHora": "2026-11-22T10:00:00Z",
            "dados": {"numero": numero, "versao": "1"},
        }
    )


@asynccontextmanager
async def working(store: Store, settings: Settings, *routers: Router) -> AsyncIterator[Worker]:
    worker = build_worker(settings, store, Routing(list(routers), settings.sources))
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
        await asyncio.sleep(0.02)


def statuses(store: Store) -> dict[str, str]:
    return {row["id"]: row["status"] for row in store.notes(NoteFilter())}


async def test_duplicates_create_no_jobs(store: Store, settings: Settings) -> None:
    router = Router()
    calls: list[str] = []

    @router.on("pucomex", "duimp.registro")
    async def once(note: Notification, ctx: Context) -> None:
        calls.append(note.id)

    first, second = store.append_now([incoming(duimp("7")), incoming(duimp("7"))])
    assert second.duplicate_of == first.id
    async with working(store, settings, router):
        await until(lambda: statuses(store)[first.id] == "done")
        await asyncio.sleep(0.1)
    assert calls == [first.id]
    assert store.jobs_of(second.id) == []
    assert statuses(store)[second.id] == "duplicate"


async def test_quarantined_are_routed_again_once_a_handler_exists(
    store: Store, settings: Settings
) -> None:
    [receipt] = store.append_now([incoming('{"evento": "pcce.icms-solicitacao"}')])
    async with working(store, settings, Router()):
        await until(lambda: statuses(store)[receipt.id] == "quarantined")
    router = Router()

    @router.on("pucomex", "pcce.icms-solicitacao")
    async def icms(note: Notification, ctx: Context) -> None:
        return None

    assert replay.replay_matching(store, statuses=["quarantined"]) == 1
    async with working(store, settings, router):
        await until(lambda: statuses(store)[receipt.id] == "done")


async def test_always_failing_handler_ends_dead_then_replays(
    store: Store, settings: Settings
) -> None:
    router = Router()
    attempts: list[int] = []
    hooked: list[str] = []
    broken = True

    @router.on("pucomex", "duimp.registro")
    async def flaky(note: Notification, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        if broken:
            raise ValueError("Portal said no")

    @router.on_error
    async def alert(note: Notification, ctx: Context, error: BaseException) -> None:
        hooked.append(type(error).__name__)

    [receipt] = store.append_now([incoming(duimp("9"))])
    async with working(store, settings, router):
        await until(lambda: statuses(store)[receipt.id] == "dead")
    assert attempts == [1, 2, 3]  # max_attempts is 3 in the test settings
    assert hooked == ["ValueError"] * 3
    [job] = store.jobs_of(receipt.id)
    assert job["status"] == "dead"
    assert "Portal said no" in job["last_error"]

    broken = False
    assert replay.replay_dead(store) == 1
    async with working(store, settings, router):
        await until(lambda: statuses(store)[receipt.id] == "done")
    assert attempts == [1, 2, 3, 1]


def test_one_plan_gives_each_note_of_a_mixed_batch_its_own_outcome(
    store: Store, settings: Settings
) -> None:
    router = Router()

    @router.on("pucomex", "duimp.registro")
    async def fetch(note: Notification, ctx: Context) -> None:
        return None

    @router.on_any("pucomex")
    async def audit(note: Notification, ctx: Context) -> None:
        return None

    @router.on("sintegre", "produto.publicado")
    async def download(note: Notification, ctx: Context) -> None:
        return None

    registered = store.append_now([incoming(duimp("1")), incoming(duimp("2"))])
    [lpco] = store.append_now([incoming('{"evento": "lpco.registro"}')])
    product = '{"Nome": "%s.zip", "Uri": "https://sintegre.example/%s.zip"}'
    [published] = store.append_now([incoming(product % ("a", "a"), source="sintegre")])
    removed = incoming(product % ("b", "b"), "sintegre", event="produto.removido")
    [unknown] = store.append_now([removed])
    [unreadable] = store.append_now([incoming(b"{not json")])
    from_path_body = b'{"identificacao": {"numero": "26BR00000000001"}}'
    [from_path] = store.append_now([incoming(from_path_body, event="duimp.desembaraco")])
    assert planner.plan(store, Routing([router], settings.sources)) == 7

    def outcome(note_id: str) -> tuple[str, str | None, str | None, list[str]]:
        note = store.note(note_id)
        assert note is not None and note["routed"]
        handlers = sorted(job["handler"].rsplit(".", 1)[-1] for job in store.jobs_of(note_id))
        return note["status"], note["event"], note["error"], handlers

    for receipt in registered:
        assert outcome(receipt.id) == ("pending", "duimp.registro", None, ["audit", "fetch"])
    assert outcome(lpco.id) == ("pending", "lpco.registro", None, ["audit"])
    assert outcome(published.id) == ("pending", "produto.publicado", None, ["download"])
    status, event, error, handlers = outcome(unknown.id)
    assert (status, event, handlers) == ("quarantined", "produto.removido", [])
    assert error == "no handler for sintegre event 'produto.removido'"
    status, event, error, handlers = outcome(unreadable.id)
    assert (status, event, handlers) == ("quarantined", None, [])
    assert error is not None and error.startswith("unreadable: ")
    assert outcome(from_path.id)[:2] == ("pending", "duimp.desembaraco")  # the path's event
    assert planner.plan(store, Routing([router], settings.sources)) == 0  # all routed: none again


def planned_job(store: Store, settings: Settings) -> tuple[Routing, str]:
    router = Router()

    @router.on("pucomex", "duimp.registro")
    async def handler(note: Notification, ctx: Context) -> None:
        return None

    routing = Routing([router], settings.sources)
    [receipt] = store.append_now([incoming(duimp("1"))])
    assert planner.plan(store, routing) == 1
    return routing, receipt.id


async def test_expired_lease_is_claimed_again_and_the_old_owner_is_fenced(
    store: Store, settings: Settings
) -> None:
    _, note_id = planned_job(store, settings)
    [first] = StoreJobQueue(store).claim(10, lease_seconds=0.05)
    assert StoreJobQueue(store).claim(10, lease_seconds=0.05) == []  # leased: nobody else gets it
    await asyncio.sleep(0.1)
    [second] = StoreJobQueue(store).claim(10, lease_seconds=30)
    assert (first.job_id, first.attempt, second.attempt) == (second.job_id, 1, 2)
    assert StoreJobQueue(store).finish_many([Outcome(first, JobStatus.DONE)]) == [
        False
    ]  # lost its lease
    assert StoreJobQueue(store).finish_many([Outcome(second, JobStatus.DONE)]) == [True]
    assert statuses(store)[note_id] == "done"


async def test_poison_job_that_kills_its_worker_is_buried(store: Store, settings: Settings) -> None:
    _, note_id = planned_job(store, settings)
    for _ in range(3):  # three workers die mid-handler
        assert len(StoreJobQueue(store).claim(10, lease_seconds=0.01)) == 1
        await asyncio.sleep(0.03)
    assert StoreJobQueue(store).bury_abandoned(max_attempts=3) == 1
    assert StoreJobQueue(store).claim(10, lease_seconds=1) == []
    assert statuses(store)[note_id] == "dead"


async def test_replay_by_id_of_a_receipt_replays_the_original(
    store: Store, settings: Settings
) -> None:
    routing, note_id = planned_job(store, settings)
    [receipt] = store.append_now([incoming(duimp("1"))])
    [job] = StoreJobQueue(store).claim(10, lease_seconds=30)
    StoreJobQueue(store).finish_many([Outcome(job, JobStatus.DONE)])
    assert replay.replay_notes(store, [receipt.id]) == [note_id]
    assert statuses(store)[note_id] == "pending"
    assert planner.plan(store, routing) == 1
    assert len(StoreJobQueue(store).claim(10, lease_seconds=30)) == 1
    with pytest.raises(KeyError):
        replay.replay_notes(store, ["nope"])


async def test_metrics_follow_the_queue(store: Store, settings: Settings) -> None:
    planned_job(store, settings)
    counts, oldest = StoreJobQueue(store).counts()
    assert counts == {"pending": 1}
    assert oldest >= 0


@pytest.mark.parametrize("database_url", [BOTH_STORES[1]], indirect=True)
def test_concurrent_claimers_never_share_a_job(store: Store, settings: Settings) -> None:
    """Several claimers at once is the PostgreSQL deployment (SQLite runs one worker process)."""
    router = Router()

    @router.on("pucomex", "duimp.registro")
    async def handler(note: Notification, ctx: Context) -> None:
        return None

    store.append_now([incoming(duimp(str(n))) for n in range(600)])
    routing = Routing([router], settings.sources)
    while planner.plan(store, routing, limit=200):
        pass
    taken: list[list[int]] = [[] for _ in range(4)]

    def claimer(slot: int) -> None:
        while batch := StoreJobQueue(store).claim(7, lease_seconds=60):
            taken[slot].extend(job.job_id for job in batch)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [job for slot in taken for job in slot]
    assert len(every) == 600
    assert len(set(every)) == 600
    assert sum(1 for slot in taken if slot) >= 2


async def test_many_handlers_finishing_together_leave_the_notification_done(
    store: Store, settings: Settings
) -> None:
    """Ten jobs of one notification settle at once; none may read the others as still running."""
    router = Router()
    for n in range(10):

        async def handler(note: Notification, ctx: Context) -> None:
            await asyncio.sleep(0.01)

        handler.__qualname__ = f"handler_{n}"
        router.on_any("pucomex")(handler)
    receipts = store.append_now([incoming(duimp(str(n))) for n in range(5)])
    async with working(store, settings, router):
        await until(lambda: all(statuses(store)[r.id] == "done" for r in receipts))
    assert all(len(store.jobs_of(r.id)) == 10 for r in receipts)


async def test_outcomes_are_written_together_and_fenced_one_by_one(
    store: Store, settings: Settings
) -> None:
    router = Router()

    @router.on_any("pucomex")
    async def handler(note: Notification, ctx: Context) -> None:
        return None

    routing = Routing([router], settings.sources)
    store.append_now([incoming(duimp(str(n))) for n in range(20)])
    planner.plan(store, routing)
    claimed = StoreJobQueue(store).claim(20, lease_seconds=0.05)
    await asyncio.sleep(0.1)
    [stolen] = StoreJobQueue(store).claim(
        1, lease_seconds=30
    )  # one lease ran out and was taken again
    transactions = 0

    def counting(outcomes: list[Outcome]) -> list[bool]:
        nonlocal transactions
        transactions += 1
        return StoreJobQueue(store).finish_many(outcomes)

    writer = GroupedWrites[Outcome, bool](counting, name="outcomes")
    kept = await asyncio.gather(*(writer.submit(Outcome(job, JobStatus.DONE)) for job in claimed))
    assert transactions <= 2  # the first outcome's own write, then everyone who queued behind it
    assert kept == [job.job_id != stolen.job_id for job in claimed]
    done = [row for row in store.notes(NoteFilter()) if row["status"] == "done"]
    assert len(done) == 19


async def test_concurrent_saves_share_a_transaction_and_the_last_save_of_a_key_wins(
    store: Store,
) -> None:
    transactions: list[int] = []

    def counting(results: list[Result]) -> list[None]:
        transactions.append(len(results))
        return save_results(store, results)

    results = StoreResults(store, write_many=counting)  # the same writer, counted
    await asyncio.gather(
        *(results.save("duimp", f"k{n}", {"n": n}) for n in range(30)),
        results.save("duimp", "k0", {"n": "again"}),  # queued after the first k0: it wins
    )
    assert sum(transactions) == 31 and len(transactions) <= 2
    assert await results.load("duimp", "k0") == {"n": "again"}
    assert [await results.load("duimp", f"k{n}") for n in range(1, 30)] == [
        {"n": n} for n in range(1, 30)
    ]


async def test_a_save_that_cannot_be_kept_fails_alone(store: Store) -> None:
    def refusing(batch: list[Result]) -> list[None]:
        # As PostgreSQL refuses a key longer than its column: the batch's transaction fails.
        if any(item.key == "refused" for item in batch):
            raise ValueError("value too long for type character varying(200)")
        return save_results(store, batch)

    results = StoreResults(store, write_many=refusing)
    with pytest.raises(TypeError):  # not JSON: refused in the handler's own call
        await results.save("duimp", "x", {"when": object()})
    outcomes = await asyncio.gather(
        *(results.save("duimp", key, {"key": key}) for key in ("a", "refused", "b", "c")),
        return_exceptions=True,
    )
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "NoneType",
        "ValueError",
        "NoneType",
        "NoneType",
    ]
    assert [await results.load("duimp", key) for key in ("a", "refused", "b", "c")] == [
        {"key": "a"},
        None,
        {"key": "b"},
        {"key": "c"},
    ]


@pytest.mark.postgres
async def test_a_key_postgresql_refuses_fails_only_its_own_save(tmp_path: Path) -> None:
    store = Store(fresh_database("postgres", tmp_path))  # skips without a server
    migrated(store)
    try:
        results = StoreResults(store)
        outcomes = await asyncio.gather(
            results.save("duimp", "ok-1", 1),
            results.save("duimp", "k" * 201, 2),  # the key column holds 200 characters
            results.save("duimp", "ok-2", 3),
            return_exceptions=True,
        )
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], Exception)
        assert await results.load("duimp", "ok-1") == 1
        assert await results.load("duimp", "ok-2") == 3
    finally:
        store.close()


async def test_when_the_store_is_down_a_batch_fails_at_once(store: Store) -> None:
    calls: list[int] = []

    def unreachable(batch: list[Result]) -> list[None]:
        calls.append(len(batch))
        raise OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))

    results = StoreResults(store, write_many=unreachable)
    outcomes = await asyncio.gather(
        *(results.save("duimp", f"k{n}", n) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(outcome, OperationalError) for outcome in outcomes)
    assert sum(calls) == 5 and len(calls) <= 2  # not once more for each of them


async def test_a_failing_handler_leaves_each_attempt_with_its_error_and_traceback(
    store: Store, settings: Settings
) -> None:
    router = Router()

    @router.on("pucomex", "duimp.registro")
    async def refused_by_the_portal(note: Notification, ctx: Context) -> None:
        raise ValueError(f"Portal answered 503 on attempt {ctx.attempt}")

    [receipt] = store.append_now([incoming(duimp("18"))])
    async with working(store, settings, router):
        await until(lambda: statuses(store)[receipt.id] == "dead")
    attempts = store.attempts_of(receipt.id)
    [job] = store.jobs_of(receipt.id)
    assert [(row["attempt"], row["outcome"]) for row in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "dead"),
    ]
    for row in attempts:
        assert row["job_id"] == job["id"]
        assert row["handler"] == job["handler"]
        assert row["error_type"] == "ValueError"
        assert row["message"] == f"Portal answered 503 on attempt {row['attempt']}"
        assert "in refused_by_the_portal\n" in row["traceback"]
        assert row["traceback"].rstrip().endswith(row["message"])
        assert row["started_at"] <= row["finished_at"]
