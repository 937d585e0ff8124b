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
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

from sqlalchemy import false, func, select, text

from receiver.sources import dedup_key
from receiver.store import JOBS, NOTES, RECEIVER_TABLES, Incoming, JobStatus, Store
from receiver.store.schema import RECEIVER_SCHEMA

EVENT = "dimp-registro-import"
FILL_BATCH = 1000
NOT_DONE = [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED]
POLL_SECONDS = 0.05


# One worker process, from whichever source tree is first on its path (``--baseline`` runs the
# same code against an older checkout): only names both trees have.
WORKER = """
import asyncio, signal, sys
from receiver import Context, Notification, Router
from receiver.config import settings_from_mapping
from receiver.runtime.services import build_worker
from receiver.store import Store
from receiver.worker.routing import Routing

url, concurrency, batch, event = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
worker_settings = {"concurrency": concurrency, "poll_interval_seconds": 0.05}
if batch:
    worker_settings["batch_size"] = batch
settings = settings_from_mapping(
    {"database_url": url, "sources": {"pucomex": {"credentials": []}}, "worker": worker_settings},
    origin="worker_bench",
)
router = Router()

@router.on("pucomex", event)
async def nothing(note: Notification, ctx: Context) -> None:
    return None

store = Store(url)
worker = build_worker(settings, store, Routing([router], settings.sources))

async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(worker.run(stop, grace_seconds=5))
    print("ready", flush=True)
    await task

asyncio.run(main())
store.close()
"""


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
        cascade = " CASCADE" if store.dialect == "postgresql" else ""
        with store.engine.begin() as conn:
            for table in reversed(RECEIVER_TABLES):
                conn.execute(text(f"DROP TABLE IF EXISTS {table.name}{cascade}"))
            conn.execute(text(f"DROP TABLE IF EXISTS {RECEIVER_SCHEMA.version_table}"))
        store.upgrade_schema()
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


@dataclass(frozen=True)
class Tree:
    """Where the worker's code comes from: this checkout, or ``--baseline``'s."""

    name: str
    path: Path
    batch_size: int = 0  # 0: the tree's default


def start_workers(
    tree: Tree, url: str, count: int, concurrency: int
) -> list[subprocess.Popen[str]]:
    environment = {**os.environ, "PYTHONPATH": str(tree.path)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(concurrency), str(tree.batch_size), EVENT],
            cwd=tree.path,
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for process in processes:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise SystemExit(f"a worker process from {tree.path} did not start")
    return processes


def stop_all(processes: Sequence[subprocess.Popen[str]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def drain(tree: Tree, url: str, notifications: int, workers: int, concurrency: int) -> float:
    reset(url)
    fill(url, 0, notifications)
    store = Store(url)
    try:
        started = time.monotonic()
        processes = start_workers(tree, url, workers, concurrency)
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
        stop_all(processes)
        check(store, notifications)
    finally:
        store.close()
    rate = notifications / seconds
    print(
        f"  {tree.name}: drain {notifications} jobs, {workers} worker process(es), concurrency "
        f"{concurrency}: {seconds:.2f} s, {rate:,.0f} jobs/s",
        flush=True,
    )
    return rate


def sustain(tree: Tree, url: str, rate: int, seconds: float, concurrency: int) -> bool:
    reset(url)
    store = Store(url)
    context = multiprocessing.get_context("spawn")
    try:
        processes = start_workers(tree, url, 1, concurrency)
        stop = context.Event()
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
        stop_all(processes)
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
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="an older checkout (git archive REV | tar -x -C DIR) whose worker runs in alternating "
        "rounds with this one's, for ratios measured in the same run",
    )
    parser.add_argument("--batch-size", type=int, default=0, help="worker.batch_size (default)")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parents[1]
    trees = [Tree("this", here, args.batch_size)]
    if args.baseline is not None:
        trees.insert(0, Tree("baseline", args.baseline.resolve(), args.batch_size))
    with tempfile.TemporaryDirectory(prefix="worker-bench-") as folder:
        url = args.postgres or f"sqlite:///{Path(folder) / 'receiver.db'}"
        print(
            f"store: {Store(url).safe_url}; pid {os.getpid()}; {os.cpu_count()} cores; load "
            f"average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        if args.sustain:
            kept_up = [
                sustain(tree, url, args.sustain, args.seconds, args.concurrency) for tree in trees
            ]
            return 0 if kept_up[-1] else 1
        counts = [int(part) for part in args.workers.split(",")]
        rates: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for count in counts:
                for tree in trees:
                    rate = drain(tree, url, args.notifications, count, args.concurrency)
                    rates.setdefault((tree.name, count), []).append(rate)
        print(f"summary (medians over {args.rounds} rounds, alternating)")
        for count in counts:
            this = statistics.median(rates["this", count])
            line = f"  workers {count}: {this:,.0f} jobs/s"
            if args.baseline is not None:
                before = statistics.median(rates["baseline", count])
                ratios = [
                    after / base
                    for after, base in zip(
                        rates["this", count], rates["baseline", count], strict=True
                    )
                ]
                line += (
                    f", baseline {before:,.0f} jobs/s: x{statistics.median(ratios):.2f} "
                    f"(rounds x{min(ratios):.2f}-x{max(ratios):.2f})"
                )
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
