"""Handler worker throughput with a handler that does nothing, on SQLite or PostgreSQL (issue 21).

    .venv/bin/python -m loadtests.worker_bench                         # drain 20,000 on SQLite
    .venv/bin/python -m loadtests.worker_bench --postgres URL --workers 1,2
    .venv/bin/python -m loadtests.worker_bench --sustain 5000 --seconds 20   # keeps up?

``drain``: stores ``--notifications`` notifications first (one batch append per 1,000, as the
writer does), then starts ``--workers`` worker processes (each one ``receiver worker``'s
``Worker`` on its own event loop, the store's job queue, a no-op handler) and times them until
every notification is routed and every job done: jobs per second, the planner's routing
included. ``--workers 1,2`` runs each count in turn, for the scaling on PostgreSQL (SQLite
serialises writers: one worker process).

``sustain``: one worker process runs while a feeder process appends ``--sustain`` notifications
per second (a batch every 100 ms, as ingest's group commit would) for ``--seconds``; the backlog
(routed-not-done jobs plus unrouted notifications) is printed every second. The worker keeps up
when the backlog stays flat, not growing. The feeder is the store's append, not HTTP: it loads
the store as ingest would, without wrk's CPU on the same 2 cores.

Every run ends with a store check: every stored notification is done, none lost. ``--postgres``
names a database the script may empty (it drops the receiver's tables first). Figures on a
shared machine are noisy: compare runs made one after the other, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

from sqlalchemy import false, func, select, text

from receiver import Context, Notification, Router
from receiver.config import Settings, settings_from_mapping
from receiver.runtime.services import build_worker
from receiver.sources import dedup_key
from receiver.store import JOBS, NOTES, RECEIVER_TABLES, Incoming, JobStatus, Store
from receiver.worker.routing import Routing

EVENT = "dimp-registro-import"
FILL_BATCH = 1000
NOT_DONE = [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED]
POLL_SECONDS = 0.05


def settings_for(url: str, concurrency: int) -> Settings:
    worker: dict[str, object] = {"concurrency": concurrency, "poll_interval_seconds": 0.05}
    if os.environ.get("WORKER_BENCH_BATCH"):
        worker["batch_size"] = int(os.environ["WORKER_BENCH_BATCH"])
    return settings_from_mapping(
        {
            "database_url": url,
            "sources": {"pucomex": {"credentials": []}},
            "worker": worker,
        },
        origin="worker_bench",
    )


def noop_router() -> Router:
    router = Router()

    @router.on("pucomex", EVENT)
    async def nothing(note: Notification, ctx: Context) -> None:
        return None

    return router


def body(number: int) -> bytes:
    return json.dumps(
        {
            "identificacao": {"numero": f"26BR{number:011d}", "versao": 1},
            "situacaoDuimp": "REGISTRADA",
            "canal": "VERDE",
            "dataEvento": "2026-11-22T10:00:00-03:00",
            "message": "x" * 700,  # about 1 KiB, as the ingest bench's bodies
        }
    ).encode()


def incoming(number: int) -> Incoming:
    raw = body(number)
    return Incoming(
        "pucomex", EVENT, "161.148.1.1", {"event-type": EVENT}, raw, dedup_key("pucomex", raw)
    )


def reset(url: str) -> None:
    store = Store(url)
    try:
        if store.dialect == "postgresql":
            with store.engine.begin() as conn:
                for table in reversed(RECEIVER_TABLES):
                    conn.execute(text(f"DROP TABLE IF EXISTS {table.name} CASCADE"))
        store.create_schema()
    finally:
        store.close()


def fill(url: str, first: int, count: int) -> None:
    store = Store(url)
    try:
        for start in range(first, first + count, FILL_BATCH):
            store.append_now(
                [incoming(n) for n in range(start, min(first + count, start + FILL_BATCH))]
            )
    finally:
        store.close()


def backlog(store: Store) -> tuple[int, int]:
    """(unrouted notifications, jobs not done), through the indexes the worker uses (partial
    index of unrouted notes, jobs by status): this polls while the worker runs, on its cores."""
    with store.reading() as conn:
        unrouted = conn.execute(
            select(func.count())
            .select_from(NOTES)
            # Only the partial index's own condition: the bench stores no duplicates.
            .where(NOTES.c.routed == false())
        ).scalar_one()
        waiting = conn.execute(
            select(func.count()).select_from(JOBS).where(JOBS.c.status.in_(NOT_DONE))
        ).scalar_one()
    return int(unrouted), int(waiting)


def work(url: str, concurrency: int, stop: EventType, ready: EventType) -> None:
    """One worker process: ``receiver worker``'s Worker with a no-op handler until ``stop``."""
    settings = settings_for(url, concurrency)
    store = Store(url)
    worker = build_worker(settings, store, Routing([noop_router()], settings.sources))

    async def run() -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(worker.run(stopping, grace_seconds=5))
        ready.set()
        # The stop comes from another process: waited for in a thread, not polled.
        await asyncio.to_thread(stop.wait)
        stopping.set()
        await task

    try:
        asyncio.run(run())
    finally:
        store.close()


def feed(url: str, rate: int, seconds: float, stop: EventType) -> None:
    """Append ``rate`` notifications per second, a batch every 100 ms, for ``seconds``."""
    store = Store(url)
    per_tick = max(1, rate // 10)
    started = time.monotonic()
    number = 10_000_000
    tick = 0
    try:
        while not stop.is_set() and time.monotonic() - started < seconds:
            store.append_now([incoming(number + i) for i in range(per_tick)])
            number += per_tick
            tick += 1
            lag = started + tick * 0.1 - time.monotonic()
            if lag > 0:
                time.sleep(lag)
    finally:
        store.close()


def start_workers(url: str, count: int, concurrency: int) -> tuple[list[BaseProcess], EventType]:
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    processes: list[BaseProcess] = []
    readies = []
    for _ in range(count):
        ready = context.Event()
        process = context.Process(target=work, args=(url, concurrency, stop, ready))
        process.start()
        processes.append(process)
        readies.append(ready)
    for ready in readies:
        ready.wait(60)
    return processes, stop


def stop_all(processes: Sequence[BaseProcess], stop: EventType) -> None:
    stop.set()
    for process in processes:
        process.join(30)
        if process.is_alive():
            process.kill()


def drain(url: str, notifications: int, workers: int, concurrency: int) -> float:
    reset(url)
    fill(url, 0, notifications)
    store = Store(url)
    try:
        started = time.monotonic()
        processes, stop = start_workers(url, workers, concurrency)
        # Start-up (imports, a fresh interpreter) is not the worker's throughput: timed from the
        # first notification routed.
        while True:
            unrouted, waiting = backlog(store)
            if unrouted < notifications or waiting:
                break
            time.sleep(0.01)
        started = time.monotonic()
        while True:
            unrouted, waiting = backlog(store)
            if unrouted == 0 and waiting == 0:
                break
            if time.monotonic() - started > 600:
                print("  gave up after 600 s", flush=True)
                break
            time.sleep(POLL_SECONDS)
        seconds = time.monotonic() - started
        stop_all(processes, stop)
        check(store, notifications)
    finally:
        store.close()
    rate = notifications / seconds
    print(
        f"  drain: {notifications} jobs, {workers} worker process(es), concurrency "
        f"{concurrency}: {seconds:.2f} s, {rate:,.0f} jobs/s",
        flush=True,
    )
    return rate


def sustain(url: str, rate: int, seconds: float, concurrency: int) -> bool:
    reset(url)
    store = Store(url)
    context = multiprocessing.get_context("spawn")
    try:
        processes, stop = start_workers(url, 1, concurrency)
        feeder = context.Process(target=feed, args=(url, rate, seconds, stop))
        feeder.start()
        started = time.monotonic()
        samples: list[int] = []
        while feeder.is_alive():
            time.sleep(1.0)
            unrouted, waiting = backlog(store)
            samples.append(unrouted + waiting)
            print(
                f"  [{time.monotonic() - started:5.1f} s] backlog {unrouted + waiting:>7,} "
                f"(unrouted {unrouted:,}, jobs not done {waiting:,})",
                flush=True,
            )
        fed = store.count_notes()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            unrouted, waiting = backlog(store)
            if unrouted == 0 and waiting == 0:
                break
            time.sleep(POLL_SECONDS)
        settled = time.monotonic() - started - seconds
        stop_all(processes, stop)
        check(store, fed)
    finally:
        store.close()
    # Keeping up: the backlog in the second half is no larger than a second's worth of arrivals
    # and does not grow from the first sample of that half to the last.
    half = samples[len(samples) // 2 :] or [0]
    kept_up = max(half) <= rate and half[-1] <= half[0] + rate // 2
    print(
        f"  sustain: {fed:,} fed at {rate:,}/s for {seconds:.0f} s; backlog in the second half "
        f"{min(half):,}-{max(half):,}; all done {settled:.1f} s after the feed stopped: "
        f"{'KEPT UP' if kept_up else 'FELL BEHIND'}",
        flush=True,
    )
    return kept_up


def check(store: Store, expected: int) -> None:
    """No notification lost: as many stored as fed, and every one done."""
    with store.reading() as conn:
        stored = conn.execute(select(func.count()).select_from(NOTES)).scalar_one()
        not_done = conn.execute(select(func.count()).where(NOTES.c.status != "done")).scalar_one()
    verdict = "ok" if stored == expected and not_done == 0 else "FAILED"
    print(f"  store check: {stored} stored (expected {expected}), {not_done} not done: {verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.worker_bench",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--notifications", type=int, default=20_000)
    parser.add_argument("--workers", default="1", help="worker process counts to run, e.g. 1,2")
    parser.add_argument("--concurrency", type=int, default=8, help="worker.concurrency (8)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--postgres", metavar="URL", help="run on this PostgreSQL database")
    parser.add_argument("--sustain", type=int, metavar="PER_SECOND", help="sustained feed rate")
    parser.add_argument("--seconds", type=float, default=20.0, help="sustained feed duration")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="worker-bench-") as folder:
        url = args.postgres or f"sqlite:///{Path(folder) / 'receiver.db'}"
        print(
            f"store: {Store(url).safe_url}; pid {os.getpid()}; {os.cpu_count()} cores", flush=True
        )
        if args.sustain:
            return 0 if sustain(url, args.sustain, args.seconds, args.concurrency) else 1
        counts = [int(part) for part in args.workers.split(",")]
        rates: dict[int, list[float]] = {count: [] for count in counts}
        for _ in range(args.rounds):
            for count in counts:
                rates[count].append(drain(url, args.notifications, count, args.concurrency))
        for count, found in rates.items():
            found.sort()
            print(f"workers {count}: median {found[len(found) // 2]:,.0f} jobs/s over {len(found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
